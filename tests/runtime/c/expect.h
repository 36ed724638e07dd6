/* expect.h -- the checks the C ABI tests share: each counts in g_checks, and each failure is printed with
 * the test's file and line and counted in g_failures, so that a test reports every wrong answer of a run
 * rather than stopping at the first. Include after the model's header (it uses the runtime's status calls).
 */
#ifndef GRAPHC_TESTS_EXPECT_H
#define GRAPHC_TESTS_EXPECT_H

#include <stdio.h>
#include <string.h>

static int g_checks = 0;
static int g_failures = 0;

#define FAIL(...)                                        \
  do {                                                   \
    fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
    fprintf(stderr, __VA_ARGS__);                        \
    fprintf(stderr, "\n");                               \
    g_failures++;                                        \
  } while (0)

#define CHECK(cond, ...)            \
  do {                              \
    g_checks++;                     \
    if (!(cond)) FAIL(__VA_ARGS__); \
  } while (0)

/* The call must fail with `code`, a message containing `needle`, and the runtime's source location. */
#define EXPECT_ERROR(call, code, needle)                                                                 \
  do {                                                                                                   \
    gc_status_t s_ = (call);                                                                             \
    g_checks++;                                                                                          \
    if (s_ == NULL) {                                                                                    \
      FAIL("%s succeeded, expected %s", #call, gc_status_code_name(code));                               \
    } else {                                                                                             \
      if (gc_status_code(s_) != (code))                                                                  \
        FAIL("%s: code %s, expected %s (%s)", #call, gc_status_code_name(gc_status_code(s_)),            \
             gc_status_code_name(code), gc_status_message(s_));                                          \
      if (strstr(gc_status_message(s_), (needle)) == NULL)                                               \
        FAIL("%s: message \"%s\" does not mention \"%s\"", #call, gc_status_message(s_), needle);        \
      if (gc_status_file(s_)[0] == 0 || gc_status_line(s_) <= 0) FAIL("%s: no source location", #call); \
      gc_status_release(s_);                                                                             \
    }                                                                                                    \
  } while (0)

/* The call must succeed. */
#define EXPECT_OK(call)                                                                                   \
  do {                                                                                                    \
    gc_status_t s_ = (call);                                                                              \
    g_checks++;                                                                                           \
    if (s_ != NULL) {                                                                                     \
      FAIL("%s failed: %s (%s)", #call, gc_status_message(s_), gc_status_code_name(gc_status_code(s_))); \
      gc_status_release(s_);                                                                              \
    }                                                                                                     \
  } while (0)

/* A float32 matrix of rows x cols over `data`. */
static inline gc_tensor_t matrix_f32(float* data, int64_t rows, int64_t cols) {
  gc_tensor_t t;
  memset(&t, 0, sizeof t);
  t.dtype = GC_FLOAT32;
  t.rank = 2;
  t.shape[0] = rows;
  t.shape[1] = cols;
  t.data = data;
  t.size_bytes = (size_t)(rows * cols) * sizeof(float);
  return t;
}

#endif
