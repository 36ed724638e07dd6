/* fuzz_weights.c -- fuzz target for the native weights loader (gc_instance_load_weights), the
 * runtime's one reader of untrusted bytes, on the "abi_model" of tests/runtime.
 *
 * Input: one mode byte, then the file's bytes. Mode bit 0 rewrites the header's CRC32C to match
 * the payload, so that mutations get past the checksum and reach what follows it (a successful
 * load of arbitrary weights, then a run). Contracts checked on every input:
 *   - the call returns NULL or a status with an expected code (never a crash: the sanitizers
 *     catch invalid accesses, leaks and undefined behaviour);
 *   - a refused file leaves the current weights in place: a run afterwards gives, bit for bit,
 *     what it gave after the last successful load.
 *
 * Built with clang -fsanitize=fuzzer (libFuzzer), or with -DGC_FUZZ_STANDALONE by any C compiler:
 * then `fuzz_weights SECONDS SEED...` runs a small mutation loop of its own (bit flips, byte
 * changes, insertions, deletions, copies, truncations) and `fuzz_weights 0 FILE...` replays files.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "abi_model.h"
#include "internal.h"

enum { BATCH = 2, SEQ = 3 };

static gc_instance_t* g_inst;
static int g_fd = -1;
static char g_path[64];
static float g_y[BATCH * 4], g_pooled[BATCH * 8];
static int g_run_ok; /* whether the current weights ran successfully */

static gc_status_t run_model(float* y, float* pooled) {
  static const int32_t ids[BATCH * SEQ] = {1, 7, 49, 0, 3, 11};
  static const float x[BATCH * 8] = {0.5f, -1, 2, 0, 1, 1, -3, 0.25f, 1, 2, 3, 4, -1, -2, -3, -4};
  gc_tensor_t in[2] = {{GC_INT32, 2, {BATCH, SEQ}, (void*)ids, sizeof ids},
                       {GC_FLOAT32, 2, {BATCH, 8}, (void*)x, sizeof x}};
  gc_tensor_t out[2] = {{GC_FLOAT32, 0, {0}, y, sizeof(float) * BATCH * 4},
                        {GC_FLOAT32, 0, {0}, pooled, sizeof(float) * BATCH * 8}};
  return gc_instance_run(g_inst, in, 2, out, 2);
}

static void die(const char* what, gc_status_t s) {
  fprintf(stderr, "fuzz_weights: %s: %s (%s)\n", what, s ? gc_status_message(s) : "",
          s ? gc_status_code_name(gc_status_code(s)) : "");
  abort();
}

static void setup(void) {
  gc_options_t o;
  gc_options_init(&o);
  o.num_threads = 1;
  gc_status_t s = gc_instance_create(gc_model_abi_model(), &o, &g_inst);
  if (s) die("create", s);
  g_fd = memfd_create("graphc-weights", 0);
  if (g_fd < 0) {
    perror("memfd_create");
    abort();
  }
  snprintf(g_path, sizeof g_path, "/proc/self/fd/%d", g_fd);
  s = run_model(g_y, g_pooled);
  if (s) die("run with the embedded weights", s);
  g_run_ok = 1;
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (g_inst == NULL) setup();
  if (size < 1) return 0;
  uint8_t mode = data[0];
  data++;
  size--;
  uint8_t* buf = (uint8_t*)malloc(size ? size : 1);
  memcpy(buf, data, size);
  if ((mode & 1) && size >= 32) {
    uint32_t crc = gc__crc32c(buf + 32, size - 32);
    memcpy(buf + 12, &crc, 4);
  }
  if (ftruncate(g_fd, 0) != 0 || pwrite(g_fd, buf, size, 0) != (ssize_t)size) {
    perror("writing the memfd");
    abort();
  }
  free(buf);
  gc_status_t s = gc_instance_load_weights(g_inst, g_path);
  float y[BATCH * 4], pooled[BATCH * 8];
  if (s != NULL) {
    gc_status_code_t code = gc_status_code(s);
    if (code != GC_DATA_LOSS && code != GC_INVALID_ARGUMENT && code != GC_RESOURCE_EXHAUSTED)
      die("load_weights refused a file with an unexpected code", s);
    if (strlen(gc_status_message(s)) == 0) die("load_weights refused a file without a message", s);
    gc_status_release(s);
    /* the refused file changed nothing */
    s = run_model(y, pooled);
    if ((s == NULL) != g_run_ok) die("a refused file changed whether the model runs", s);
    if (s == NULL && (memcmp(y, g_y, sizeof y) != 0 || memcmp(pooled, g_pooled, sizeof pooled) != 0))
      die("a refused file changed the weights", NULL);
    gc_status_release(s);
    return 0;
  }
  /* new weights: any float values; the run either succeeds or fails cleanly */
  s = run_model(g_y, g_pooled);
  g_run_ok = s == NULL;
  if (s != NULL && gc_status_code(s) != GC_OUT_OF_RANGE) die("run after a successful load", s);
  gc_status_release(s);
  return 0;
}

#ifdef GC_FUZZ_STANDALONE
/* ------------------------------------------------------------------ a mutation loop of its own */

typedef struct {
  uint8_t* data;
  size_t size;
} blob_t;

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;

static uint64_t next_random(void) {
  g_rng ^= g_rng << 13;
  g_rng ^= g_rng >> 7;
  g_rng ^= g_rng << 17;
  return g_rng;
}

static size_t below(size_t n) { return n ? (size_t)(next_random() % n) : 0; }

static blob_t read_blob(const char* path) {
  blob_t b = {NULL, 0};
  FILE* f = fopen(path, "rb");
  if (f == NULL) {
    perror(path);
    exit(2);
  }
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  b.data = (uint8_t*)malloc((size_t)n + 1);
  b.size = fread(b.data, 1, (size_t)n, f);
  fclose(f);
  return b;
}

/* A few random edits of `in` (at most `cap` bytes) into `out`; returns the new size. */
static size_t mutate(const blob_t* in, uint8_t* out, size_t cap) {
  size_t n = in->size < cap ? in->size : cap;
  memcpy(out, in->data, n);
  int edits = 1 + (int)below(4);
  for (int e = 0; e < edits; e++) {
    if (n == 0) {
      out[0] = (uint8_t)next_random();
      n = 1;
    }
    size_t i = below(n);
    switch (below(7)) {
      case 0: out[i] ^= (uint8_t)(1u << below(8)); break;
      case 1: out[i] = (uint8_t)(below(2) ? 0xFF : next_random()); break;
      case 2: { /* overwrite a header field with an edge value */
        static const uint64_t edges[] = {0, 1, 0xFFFFFFFFull, 0xFFFFFFFFFFFFFFFFull, 1ull << 40, 32, 2};
        uint64_t v = edges[below(sizeof edges / sizeof edges[0])];
        size_t at = 1 + 8 * below(4);
        if (at + 8 <= n) memcpy(out + at, &v, 8);
        break;
      }
      case 3: { size_t k = 1 + below(32); if (i + k > n) k = n - i; memmove(out + i, out + i + k, n - i - k); n -= k; break; }
      case 4: { size_t k = 1 + below(16); if (n + k <= cap) { memmove(out + i + k, out + i, n - i); for (size_t j = 0; j < k; j++) out[i + j] = (uint8_t)next_random(); n += k; } break; }
      case 5: { size_t j = below(n), k = 1 + below(64); if (i + k <= n && j + k <= n) memmove(out + i, out + j, k); break; }
      default: n = below(n + 1); break;
    }
  }
  return n;
}

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s SECONDS FILE...   (SECONDS 0: replay the files)\n", argv[0]);
    return 2;
  }
  double seconds = atof(argv[1]);
  int nseeds = argc - 2;
  blob_t* seeds = (blob_t*)calloc((size_t)nseeds, sizeof(blob_t));
  for (int k = 0; k < nseeds; k++) {
    seeds[k] = read_blob(argv[2 + k]);
    LLVMFuzzerTestOneInput(seeds[k].data, seeds[k].size);
  }
  long runs = nseeds;
  if (seconds > 0) {
    const char* seed_env = getenv("GRAPHC_FUZZ_SEED");
    g_rng ^= seed_env ? (uint64_t)strtoull(seed_env, NULL, 10) * 0x2545F4914F6CDD1Dull : 0;
    enum { CAP = 1 << 14 };
    uint8_t* input = (uint8_t*)malloc(CAP);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    const char* crash = getenv("GRAPHC_FUZZ_CURRENT");
    for (;;) {
      clock_gettime(CLOCK_MONOTONIC, &t);
      if ((double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) * 1e-9 > seconds) break;
      size_t n = mutate(&seeds[below((size_t)nseeds)], input, CAP);
      if (crash) { /* the input about to run, for a crash report */
        FILE* f = fopen(crash, "wb");
        if (f) {
          fwrite(input, 1, n, f);
          fclose(f);
        }
      }
      LLVMFuzzerTestOneInput(input, n);
      runs++;
    }
    free(input);
  }
  for (int k = 0; k < nseeds; k++) free(seeds[k].data);
  free(seeds);
  gc_instance_release(g_inst);
  close(g_fd);
  printf("ok %ld inputs\n", runs);
  return 0;
}
#endif
