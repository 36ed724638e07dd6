/* checksum.c — CRC32C (Castagnoli), the checksum of weights files.
 *
 * x86-64 with SSE4.2 computes it with the crc32 instruction (8 bytes per step, several GB/s);
 * elsewhere a byte-at-a-time table, built on the stack per call (256 entries: a few hundred
 * nanoseconds, and no global state). graphc writes the checksum in Python
 * (graphc/backends/llvm/checksum.py); both give 0xe3069283 for "123456789".
 */
#include <string.h>

#include "internal.h"

#define GC_CRC32C_POLY 0x82f63b78u /* reflected */

static uint32_t gc__crc32c_table(uint32_t crc, const unsigned char* p, size_t n) {
  uint32_t table[256];
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = (c >> 1) ^ (GC_CRC32C_POLY & (0u - (c & 1u)));
    table[i] = c;
  }
  for (size_t i = 0; i < n; i++) crc = table[(crc ^ p[i]) & 0xffu] ^ (crc >> 8);
  return crc;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target("sse4.2"))) static uint32_t gc__crc32c_sse42(uint32_t crc, const unsigned char* p, size_t n) {
  uint64_t c = crc;
  for (; n >= 8; n -= 8, p += 8) {
    uint64_t word;
    memcpy(&word, p, 8);
    c = __builtin_ia32_crc32di(c, word);
  }
  uint32_t c32 = (uint32_t)c;
  for (; n > 0; n--, p++) c32 = __builtin_ia32_crc32qi(c32, *p);
  return c32;
}
#endif

uint32_t gc__crc32c(const void* data, size_t n) {
  const unsigned char* p = (const unsigned char*)data;
  uint32_t crc = 0xffffffffu;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  if (__builtin_cpu_supports("sse4.2")) return ~gc__crc32c_sse42(crc, p, n);
#endif
  return ~gc__crc32c_table(crc, p, n);
}
