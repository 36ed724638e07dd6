/* amx.c — the OS permission that AMX tiles need, asked for once per process.
 *
 * Linux enables the AMX tile data state (XTILEDATA, 8 KiB of registers per thread) only in
 * processes that request it with arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA); a tile
 * instruction before that raises SIGILL. The permission covers every thread of the process, the
 * pool's included. Generated bf16 GEMM kernels that use tiles call gc__amx_ready on entry and fail
 * with its result (the errno of the refusal) instead of touching a tile without it.
 */
#include <stdint.h>

#if defined(__x86_64__) && defined(__linux__)
#include <errno.h>
#include <sys/syscall.h>
#include <unistd.h>

#define GC_ARCH_REQ_XCOMP_PERM 0x1023
#define GC_XFEATURE_XTILEDATA 18

/* 0: not asked yet; 1: granted; otherwise 2 + errno of the refusal. */
static int64_t gc__amx_state = 0;

int64_t gc__amx_ready(void) {
  int64_t state = __atomic_load_n(&gc__amx_state, __ATOMIC_ACQUIRE);
  if (state == 0) {
    /* asking twice is harmless: racing threads all get the same answer */
    long r = syscall(SYS_arch_prctl, GC_ARCH_REQ_XCOMP_PERM, GC_XFEATURE_XTILEDATA);
    state = r == 0 ? 1 : 2 + (int64_t)errno;
    __atomic_store_n(&gc__amx_state, state, __ATOMIC_RELEASE);
  }
  return state == 1 ? 0 : state - 2;
}
#else
/* No AMX outside Linux x86-64 (code for it is never generated there). */
int64_t gc__amx_ready(void) { return -1; }
#endif
