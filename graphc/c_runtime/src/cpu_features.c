/* cpu_features.c — whether this CPU runs the instructions a model library was generated for.
 *
 * A library carries its target's CPU name and the instruction set features its code may use (LLVM's
 * names: "+avx2,+fma,+avx512f,..."). Code for AVX-512 run on an AVX2 machine dies on an illegal
 * instruction somewhere inside a kernel; gc_instance_create asks this file first and refuses, naming
 * what is missing. The features are read here as the CPU and the OS report them: CPUID with the
 * register state the OS enabled (XGETBV) on x86, the kernel's hardware capabilities (getauxval) on
 * AArch64 Linux. Features this file does not know are taken on trust: the tables cover the vector,
 * matrix and bit-manipulation extensions code generation can use for graphc's kernels.
 *
 * GRAPHC_HIDE_CPU_FEATURES=avx512f,avx2 makes the named features count as absent (as oneDNN's
 * ONEDNN_MAX_CPU_ISA caps its ISA): a way to see how a library meets a smaller CPU. WebAssembly has
 * no table (its engine validates a module's instructions) and reads no environment: a browser page
 * need not provide WASI's environment imports.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

enum { GC_EAX, GC_EBX, GC_ECX, GC_EDX };
#define GC_XCR0_AVX 0x6u          /* SSE and AVX state */
#define GC_XCR0_AVX512 0xE6u      /* and the opmask and upper ZMM state */
#define GC_XCR0_AMX 0x60000u      /* tile configuration and tile data */

typedef struct gc_x86_feature {
  const char* name; /* LLVM's */
  uint32_t leaf, subleaf;
  int reg, bit;
  uint32_t xcr0; /* register state the OS must enable */
} gc_x86_feature_t;

static const gc_x86_feature_t gc__x86_features[] = {
    {"sse3", 1, 0, GC_ECX, 0, 0},          {"ssse3", 1, 0, GC_ECX, 9, 0},
    {"fma", 1, 0, GC_ECX, 12, GC_XCR0_AVX}, {"sse4.1", 1, 0, GC_ECX, 19, 0},
    {"sse4.2", 1, 0, GC_ECX, 20, 0},        {"movbe", 1, 0, GC_ECX, 22, 0},
    {"popcnt", 1, 0, GC_ECX, 23, 0},        {"avx", 1, 0, GC_ECX, 28, GC_XCR0_AVX},
    {"f16c", 1, 0, GC_ECX, 29, GC_XCR0_AVX}, {"bmi", 7, 0, GC_EBX, 3, 0},
    {"avx2", 7, 0, GC_EBX, 5, GC_XCR0_AVX}, {"bmi2", 7, 0, GC_EBX, 8, 0},
    {"avx512f", 7, 0, GC_EBX, 16, GC_XCR0_AVX512},      {"avx512dq", 7, 0, GC_EBX, 17, GC_XCR0_AVX512},
    {"avx512ifma", 7, 0, GC_EBX, 21, GC_XCR0_AVX512},   {"avx512cd", 7, 0, GC_EBX, 28, GC_XCR0_AVX512},
    {"avx512bw", 7, 0, GC_EBX, 30, GC_XCR0_AVX512},     {"avx512vl", 7, 0, GC_EBX, 31, GC_XCR0_AVX512},
    {"avx512vbmi", 7, 0, GC_ECX, 1, GC_XCR0_AVX512},    {"avx512vbmi2", 7, 0, GC_ECX, 6, GC_XCR0_AVX512},
    {"gfni", 7, 0, GC_ECX, 8, 0},                       {"vaes", 7, 0, GC_ECX, 9, GC_XCR0_AVX},
    {"vpclmulqdq", 7, 0, GC_ECX, 10, GC_XCR0_AVX},      {"avx512vnni", 7, 0, GC_ECX, 11, GC_XCR0_AVX512},
    {"avx512bitalg", 7, 0, GC_ECX, 12, GC_XCR0_AVX512}, {"avx512vpopcntdq", 7, 0, GC_ECX, 14, GC_XCR0_AVX512},
    {"amx-bf16", 7, 0, GC_EDX, 22, GC_XCR0_AMX},        {"avx512fp16", 7, 0, GC_EDX, 23, GC_XCR0_AVX512},
    {"amx-tile", 7, 0, GC_EDX, 24, GC_XCR0_AMX},        {"amx-int8", 7, 0, GC_EDX, 25, GC_XCR0_AMX},
    {"avxvnni", 7, 1, GC_EAX, 4, GC_XCR0_AVX},          {"avx512bf16", 7, 1, GC_EAX, 5, GC_XCR0_AVX512},
};
#define GC_NUM_FEATURES (sizeof(gc__x86_features) / sizeof(gc__x86_features[0]))

static int gc__cpu_has_index(size_t i) {
  const gc_x86_feature_t* f = &gc__x86_features[i];
  unsigned int r[4] = {0, 0, 0, 0};
  if (__get_cpuid_max(0, NULL) < f->leaf) return 0;
  __cpuid_count(f->leaf, f->subleaf, r[GC_EAX], r[GC_EBX], r[GC_ECX], r[GC_EDX]);
  if (!((r[f->reg] >> f->bit) & 1u)) return 0;
  if (f->xcr0 == 0) return 1;
  unsigned int a, b, c, d;
  __cpuid(1, a, b, c, d);
  if (!((c >> 27) & 1u)) return 0; /* OSXSAVE: no XGETBV, no extended state */
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  (void)hi;
  return (lo & f->xcr0) == f->xcr0;
}

static const char* gc__feature_name(size_t i) { return gc__x86_features[i].name; }

#elif defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>

typedef struct gc_arm_feature {
  const char* name; /* LLVM's */
  int hwcap2;       /* 0: AT_HWCAP, 1: AT_HWCAP2 */
  unsigned long mask; /* every bit must be set */
} gc_arm_feature_t;

/* Bits of the kernel's arch/arm64/include/uapi/asm/hwcap.h. */
static const gc_arm_feature_t gc__arm_features[] = {
    {"fp-armv8", 0, 1ul << 0},  {"neon", 0, 1ul << 1},      {"crc", 0, 1ul << 7},
    {"lse", 0, 1ul << 8},       {"fullfp16", 0, 3ul << 9},  {"rcpc", 0, 1ul << 15},
    {"dotprod", 0, 1ul << 20},  {"sve", 0, 1ul << 22},      {"fp16fml", 0, 1ul << 23},
    {"i8mm", 1, 1ul << 13},     {"bf16", 1, 1ul << 14},
};
#define GC_NUM_FEATURES (sizeof(gc__arm_features) / sizeof(gc__arm_features[0]))

static int gc__cpu_has_index(size_t i) {
  unsigned long caps = getauxval(gc__arm_features[i].hwcap2 ? AT_HWCAP2 : AT_HWCAP);
  return (caps & gc__arm_features[i].mask) == gc__arm_features[i].mask;
}

static const char* gc__feature_name(size_t i) { return gc__arm_features[i].name; }

#else
/* WebAssembly and other platforms: the engine validates the module's instructions when it loads it. */
#define GC_NO_FEATURE_TABLE 1
#endif

#ifdef GC_NO_FEATURE_TABLE
size_t gc__cpu_missing_features(const char* features, char* out, size_t cap) {
  /* no getenv either: a WASI module's environment is an import a browser page need not provide */
  (void)features;
  if (cap > 0) out[0] = '\0';
  return 0;
}
#else
/* Whether the comma-separated `list` names `name` (an optional leading '+' on each entry). */
static int gc__list_has(const char* list, const char* name, size_t len) {
  if (list == NULL) return 0;
  const char* p = list;
  while (*p) {
    while (*p == ',' || *p == ' ') p++;
    if (*p == '+') p++;
    const char* end = p;
    while (*end && *end != ',') end++;
    size_t n = (size_t)(end - p);
    while (n > 0 && p[n - 1] == ' ') n--;
    if (n == len && strncmp(p, name, len) == 0) return 1;
    p = end;
  }
  return 0;
}

size_t gc__cpu_missing_features(const char* features, char* out, size_t cap) {
  size_t missing = 0, used = 0;
  if (cap > 0) out[0] = '\0';
  const char* hidden = getenv("GRAPHC_HIDE_CPU_FEATURES");
  for (size_t i = 0; i < GC_NUM_FEATURES; i++) {
    const char* name = gc__feature_name(i);
    size_t len = strlen(name);
    if (!gc__list_has(features, name, len)) continue;
    if (gc__cpu_has_index(i) && !gc__list_has(hidden, name, len)) continue;
    missing++;
    if (cap > 0 && used < cap - 1) {
      int n = snprintf(out + used, cap - used, "%s%s", missing > 1 ? ", " : "", name);
      if (n > 0) used += (size_t)n < cap - used ? (size_t)n : cap - used - 1;
    }
  }
  return missing;
}
#endif
