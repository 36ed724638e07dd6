/* status.c — gc_status_t: an error code, a formatted message and where it was raised.
 *
 * A status is one malloc'ed block (never through the instance allocator: statuses outlive
 * instances). When even that allocation fails, a static, immutable "out of memory" status is
 * returned; releasing it is a no-op.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct gc_status_s {
  gc_status_code_t code;
  int line;
  const char* file;
  char message[];
};

static const struct {
  gc_status_code_t code;
  int line;
  const char* file;
  char message[64];
} gc__oom_status = {GC_RESOURCE_EXHAUSTED, __LINE__, __FILE__, "out of memory while reporting an error"};

static const char* gc__basename(const char* path) {
  const char* slash = strrchr(path, '/');
  return slash ? slash + 1 : path;
}

gc_status_t gc__status_make(gc_status_code_t code, const char* file, int line, const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  int n = vsnprintf(NULL, 0, fmt, args);
  va_end(args);
  if (n < 0) n = 0;
  struct gc_status_s* s = (struct gc_status_s*)malloc(sizeof(struct gc_status_s) + (size_t)n + 1);
  if (s == NULL) return (gc_status_t)(void*)&gc__oom_status;
  s->code = code;
  s->line = line;
  s->file = gc__basename(file);
  va_start(args, fmt);
  vsnprintf(s->message, (size_t)n + 1, fmt, args);
  va_end(args);
  return s;
}

gc_status_code_t gc_status_code(gc_status_t status) { return status ? status->code : GC_OK; }

const char* gc_status_message(gc_status_t status) { return status ? status->message : ""; }

const char* gc_status_file(gc_status_t status) { return status ? status->file : ""; }

int gc_status_line(gc_status_t status) { return status ? status->line : 0; }

void gc_status_release(gc_status_t status) {
  if (status == NULL || (const void*)status == (const void*)&gc__oom_status) return;
  free(status);
}

const char* gc_status_code_name(gc_status_code_t code) {
  switch (code) {
    case GC_OK: return "GC_OK";
    case GC_INVALID_ARGUMENT: return "GC_INVALID_ARGUMENT";
    case GC_OUT_OF_RANGE: return "GC_OUT_OF_RANGE";
    case GC_FAILED_PRECONDITION: return "GC_FAILED_PRECONDITION";
    case GC_RESOURCE_EXHAUSTED: return "GC_RESOURCE_EXHAUSTED";
    case GC_NOT_FOUND: return "GC_NOT_FOUND";
    case GC_DATA_LOSS: return "GC_DATA_LOSS";
    case GC_UNIMPLEMENTED: return "GC_UNIMPLEMENTED";
    case GC_INTERNAL: return "GC_INTERNAL";
  }
  return "GC_UNKNOWN";
}

uint32_t gc_api_version(void) { return GC_API_VERSION; }

size_t gc_dtype_size(gc_dtype_t dtype) {
  switch (dtype) {
    case GC_FLOAT32: return 4;
    case GC_FLOAT64: return 8;
    case GC_INT32: return 4;
    case GC_INT64: return 8;
    case GC_INT8: return 1;
    case GC_UINT8: return 1;
    case GC_BOOL: return 1;
    case GC_FLOAT16: return 2;
    default: return 0;
  }
}

const char* gc_dtype_name(gc_dtype_t dtype) {
  switch (dtype) {
    case GC_FLOAT32: return "float32";
    case GC_FLOAT64: return "float64";
    case GC_INT32: return "int32";
    case GC_INT64: return "int64";
    case GC_INT8: return "int8";
    case GC_UINT8: return "uint8";
    case GC_BOOL: return "bool";
    case GC_FLOAT16: return "float16";
    default: return "invalid";
  }
}
