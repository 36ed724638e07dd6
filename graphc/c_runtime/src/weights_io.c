/* weights_io.c — weights files: reading them into a model's layout, writing an instance's state.
 *
 * Format version 3 (written by graphc's Python side for weights="external" and by
 * gc_instance_save_weights; all integers little-endian, as the machine that compiled the model):
 *
 *   0   "GCWEIGHT"
 *   8   u32 format version (3)
 *   12  u32 CRC32C of the payload
 *   16  u64 layout digest (the model's weights_layout_digest)
 *   24  u64 payload bytes
 *   32  u32 CRC32C of bytes 40 .. the payload's start (entry count, table size, table), u32 zero
 *   40  u32 number of entries, u32 table bytes
 *   48  the table: per weight, u32 name bytes, the name (UTF-8, no NUL), i32 dtype, i32 rank,
 *       i64 dims[rank], u64 offset in the payload, u64 bytes
 *   ..  the payload (the weights blob, in the layout the table describes); nothing after it
 *
 * The table makes the file self-describing: graphc's Python reads a file a C program saved
 * (Model.load_weights) without the library, and a file whose layout digest differs from the
 * model's is still loaded when every weight of the model is in it by name with the same dtype and
 * shape (a training library's file, with optimizer slots, into an inference library), else refused
 * naming the first weight that is missing or differs. Version 2 files (the header and payload, no
 * table) load when their digest matches. Everything is checked before the instance's weights are
 * replaced, and a file is written to a temporary file beside it, flushed and renamed over the
 * path, so readers never see half a file.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define GC_WEIGHTS_V2 2u
#define GC_WEIGHTS_V3 3u
#define GC_WEIGHTS_HEADER 32u
#define GC_WEIGHTS_TABLE_HEADER 16u
/* A table larger than this is not a weights file's (names of a few hundred bytes per weight). */
#define GC_WEIGHTS_MAX_TABLE ((uint64_t)1 << 30)

static uint32_t gc__u32(const unsigned char* p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}

static uint64_t gc__u64(const unsigned char* p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
}

static void gc__shape_text(char* buf, size_t cap, int32_t rank, const int64_t* dims) {
  size_t n = (size_t)snprintf(buf, cap, "(");
  for (int32_t i = 0; i < rank && n < cap; i++)
    n += (size_t)snprintf(buf + n, cap - n, "%s%lld", i ? ", " : "", (long long)dims[i]);
  if (n < cap) snprintf(buf + n, cap - n, rank == 1 ? ",)" : ")");
}

/* One entry of a version 3 table, pointing into the table's bytes. */
typedef struct gc_file_entry {
  const char* name;
  uint32_t name_len;
  int32_t dtype;
  int32_t rank;
  const unsigned char* dims; /* rank little-endian i64 */
  uint64_t offset, nbytes;
} gc_file_entry_t;

/* Parses the entry at table[*pos] (bounds checked against n); 0 on success. */
static int gc__parse_entry(const unsigned char* table, uint64_t n, uint64_t* pos, gc_file_entry_t* e) {
  uint64_t p = *pos;
  if (n - p < 4) return 1;
  e->name_len = gc__u32(table + p);
  p += 4;
  if (n - p < (uint64_t)e->name_len + 8) return 1;
  e->name = (const char*)(table + p);
  p += e->name_len;
  memcpy(&e->dtype, table + p, 4);
  memcpy(&e->rank, table + p + 4, 4);
  p += 8;
  if (e->rank < 0 || e->rank > GC_MAX_RANK || n - p < (uint64_t)e->rank * 8 + 16) return 1;
  e->dims = table + p;
  p += (uint64_t)e->rank * 8;
  e->offset = gc__u64(table + p);
  e->nbytes = gc__u64(table + p + 8);
  *pos = p + 16;
  return 0;
}

/* Builds the model's blob from a version 3 file whose layout differs: every model weight by name. */
static gc_status_t gc__blob_by_name(const gc_model_t* m, const char* path, const unsigned char* table,
                                    uint64_t table_bytes, uint32_t count, const unsigned char* payload,
                                    uint64_t payload_bytes, unsigned char* blob) {
  char want[256], got[256];
  memset(blob, 0, (size_t)m->weights_nbytes);
  for (uint32_t i = 0; i < m->num_weights; i++) {
    const gc_weight_def_t* w = &m->weights[i];
    size_t len = strlen(w->name);
    gc_file_entry_t e;
    int found = 0;
    uint64_t pos = 0;
    for (uint32_t k = 0; k < count; k++) {
      if (gc__parse_entry(table, table_bytes, &pos, &e))
        return GC_ERROR(GC_DATA_LOSS, "weights file '%s' has a malformed table (entry %u)", path, k);
      if (e.name_len == len && memcmp(e.name, w->name, len) == 0) {
        found = 1;
        break;
      }
    }
    if (!found)
      return GC_ERROR(GC_INVALID_ARGUMENT, "weights file '%s' has no weight '%s' of model '%s'", path, w->name,
                      m->name);
    int same = e.dtype == w->dtype && e.rank == w->rank;
    for (int32_t a = 0; same && a < w->rank; a++) same = (int64_t)gc__u64(e.dims + 8 * (size_t)a) == w->dims[a];
    if (!same) {
      int64_t dims[GC_MAX_RANK];
      for (int32_t a = 0; a < e.rank; a++) dims[a] = (int64_t)gc__u64(e.dims + 8 * (size_t)a);
      gc__shape_text(want, sizeof want, w->rank, w->dims);
      gc__shape_text(got, sizeof got, e.rank, dims);
      return GC_ERROR(GC_INVALID_ARGUMENT, "weight '%s' is %s %s in weights file '%s', model '%s' needs %s %s",
                      w->name, gc_dtype_name((gc_dtype_t)e.dtype), got, path, m->name,
                      gc_dtype_name((gc_dtype_t)w->dtype), want);
    }
    if (e.nbytes != w->nbytes || e.offset > payload_bytes || payload_bytes - e.offset < e.nbytes)
      return GC_ERROR(GC_DATA_LOSS, "weights file '%s': weight '%s' lies outside its payload", path, w->name);
    memcpy(blob + w->offset, payload + e.offset, (size_t)w->nbytes);
  }
  return NULL;
}

gc_status_t gc__read_weights(const gc_model_t* m, const gc_allocator_t* a, const char* path,
                             unsigned char** out_blob) {
  *out_blob = NULL;
  if (path == NULL) return GC_ERROR(GC_INVALID_ARGUMENT, "weights path is NULL");
  FILE* f = fopen(path, "rb");
  if (f == NULL) return GC_ERROR(GC_NOT_FOUND, "cannot open weights file '%s': %s", path, strerror(errno));
  gc_status_t status = NULL;
  unsigned char header[GC_WEIGHTS_HEADER + GC_WEIGHTS_TABLE_HEADER];
  unsigned char *table = NULL, *payload = NULL, *blob = NULL;
  struct stat st;
  if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
    status = GC_ERROR(GC_INVALID_ARGUMENT, "weights path '%s' is not a regular file", path);
    goto done;
  }
  uint64_t file_bytes = (uint64_t)st.st_size;
  if (fread(header, 1, GC_WEIGHTS_HEADER, f) != GC_WEIGHTS_HEADER || memcmp(header, "GCWEIGHT", 8) != 0) {
    status = GC_ERROR(GC_DATA_LOSS, "'%s' is not a graphc weights file (bad or truncated header)", path);
    goto done;
  }
  uint32_t version = gc__u32(header + 8), checksum = gc__u32(header + 12);
  uint64_t digest = gc__u64(header + 16), nbytes = gc__u64(header + 24);
  if (version != GC_WEIGHTS_V2 && version != GC_WEIGHTS_V3) {
    status = GC_ERROR(GC_DATA_LOSS, "weights file '%s' has format version %u, this runtime reads 2 and 3%s", path,
                      version,
                      version == 1 ? " (version 1 files carry no checksum: export the weights again)" : "");
    goto done;
  }
  uint32_t count = 0;
  uint64_t table_bytes = 0, start = GC_WEIGHTS_HEADER;
  if (version == GC_WEIGHTS_V3) {
    if (fread(header + GC_WEIGHTS_HEADER, 1, GC_WEIGHTS_TABLE_HEADER, f) != GC_WEIGHTS_TABLE_HEADER) {
      status = GC_ERROR(GC_DATA_LOSS, "weights file '%s' is truncated in its table header", path);
      goto done;
    }
    count = gc__u32(header + 40);
    table_bytes = gc__u32(header + 44);
    if (gc__u32(header + 36) != 0) {
      status = GC_ERROR(GC_DATA_LOSS, "weights file '%s' is corrupt: a reserved header field is not zero", path);
      goto done;
    }
    start += GC_WEIGHTS_TABLE_HEADER + table_bytes;
  }
  int same_layout = digest == m->weights_layout_digest && nbytes == m->weights_nbytes;
  if (!same_layout && version == GC_WEIGHTS_V2) {
    status = GC_ERROR(GC_INVALID_ARGUMENT, "weights file '%s' was written for another model (layout %016llx, "
                      "%llu bytes), model '%s' needs layout %016llx, %llu bytes", path, (unsigned long long)digest,
                      (unsigned long long)nbytes, m->name, (unsigned long long)m->weights_layout_digest,
                      (unsigned long long)m->weights_nbytes);
    goto done;
  }
  /* sizes are checked against the file before anything is allocated for them */
  if (table_bytes > GC_WEIGHTS_MAX_TABLE || file_bytes < start || file_bytes - start < nbytes) {
    status = GC_ERROR(GC_DATA_LOSS, "weights file '%s' is truncated: %llu bytes, its header describes %llu", path,
                      (unsigned long long)file_bytes, (unsigned long long)(start + nbytes));
    goto done;
  }
  if (file_bytes - start > nbytes) {
    status = GC_ERROR(GC_DATA_LOSS, "weights file '%s' has trailing bytes after its %llu-byte payload", path,
                      (unsigned long long)nbytes);
    goto done;
  }
  if (version == GC_WEIGHTS_V3) {
    /* the table checksum covers the entry count and table size (8 bytes) and the table */
    table = (unsigned char*)gc__alloc(a, (size_t)table_bytes + 8, 64);
    if (table == NULL) {
      status = GC_ERROR(GC_RESOURCE_EXHAUSTED, "cannot allocate the table of '%s'", path);
      goto done;
    }
    memcpy(table, header + 40, 8);
    if (fread(table + 8, 1, (size_t)table_bytes, f) != table_bytes) {
      status = GC_ERROR(GC_DATA_LOSS, "weights file '%s' is truncated in its table", path);
      goto done;
    }
    if (gc__crc32c(table, (size_t)table_bytes + 8) != gc__u32(header + 32)) {
      status = GC_ERROR(GC_DATA_LOSS, "weights file '%s' is corrupt: its table's checksum does not match", path);
      goto done;
    }
  }
  /* read into a fresh buffer so that a bad file leaves the current weights intact */
  payload = (unsigned char*)gc__alloc(a, (size_t)(nbytes ? nbytes : 1), 64);
  if (payload == NULL) {
    status = GC_ERROR(GC_RESOURCE_EXHAUSTED, "cannot allocate %llu bytes for the weights", (unsigned long long)nbytes);
    goto done;
  }
  size_t got = fread(payload, 1, (size_t)nbytes, f);
  if (got != nbytes) {
    status = GC_ERROR(GC_DATA_LOSS, "weights file '%s' is truncated: %zu of %llu bytes", path, got,
                      (unsigned long long)nbytes);
    goto done;
  }
  uint32_t actual = gc__crc32c(payload, (size_t)nbytes);
  if (actual != checksum) {
    status = GC_ERROR(GC_DATA_LOSS, "weights file '%s' is corrupt: its payload's checksum is %08x, the header "
                      "says %08x (CRC32C)", path, actual, checksum);
    goto done;
  }
  if (same_layout) {
    *out_blob = payload;
    payload = NULL;
    goto done;
  }
  blob = (unsigned char*)gc__alloc(a, (size_t)(m->weights_nbytes ? m->weights_nbytes : 1), 64);
  if (blob == NULL) {
    status = GC_ERROR(GC_RESOURCE_EXHAUSTED, "cannot allocate %llu bytes for the weights",
                      (unsigned long long)m->weights_nbytes);
    goto done;
  }
  status = gc__blob_by_name(m, path, table + 8, table_bytes, count, payload, nbytes, blob);
  if (status == NULL) {
    *out_blob = blob;
    blob = NULL;
  }
done:
  gc__free(a, table);
  gc__free(a, payload);
  gc__free(a, blob);
  fclose(f);
  return status;
}

/* ------------------------------------------------------------------ writing */

static void gc__put32(unsigned char* p, uint32_t v) { memcpy(p, &v, 4); }
static void gc__put64(unsigned char* p, uint64_t v) { memcpy(p, &v, 8); }

static gc_status_t gc__write_error(int err, const char* what, const char* path) {
  gc_status_code_t code = err == ENOENT || err == ENOTDIR ? GC_NOT_FOUND
                          : err == ENOSPC || err == EDQUOT ? GC_RESOURCE_EXHAUSTED
                                                           : GC_FAILED_PRECONDITION;
  return GC_ERROR(code, "cannot save weights to '%s': %s: %s", path, what, strerror(err));
}

static int gc__write_all(int fd, const unsigned char* p, size_t n) {
  while (n > 0) {
    ssize_t k = write(fd, p, n);
    if (k < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    p += k;
    n -= (size_t)k;
  }
  return 0;
}

/* The process's id in temporary names; WASI has no processes (nor getpid without an emulation
 * library), and the clock and salt below keep a module's names apart. */
#if defined(__wasi__)
#define GC__PROCESS_ID 0L
#else
#define GC__PROCESS_ID ((long)getpid())
#endif

/* A new temporary file beside `path` (created exclusively, mode 0666 less the umask); its name in tmp. */
static int gc__create_temp(const char* path, const void* salt, char* tmp, size_t cap, int* out_fd) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  uint64_t seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ (uint64_t)(uintptr_t)salt;
  for (int attempt = 0; attempt < 16; attempt++) {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    int n = snprintf(tmp, cap, "%s.%ld.%08llx.tmp", path, GC__PROCESS_ID, (unsigned long long)(seed >> 32));
    if (n < 0 || (size_t)n >= cap) return ENAMETOOLONG;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd >= 0) {
      *out_fd = fd;
      return 0;
    }
    if (errno != EEXIST) return errno;
  }
  return EEXIST;
}

gc_status_t gc__write_weights(const gc_model_t* m, const gc_allocator_t* a, const unsigned char* weights,
                              const char* path) {
  if (path == NULL) return GC_ERROR(GC_INVALID_ARGUMENT, "weights path is NULL");
  if (path[0] == 0) return GC_ERROR(GC_INVALID_ARGUMENT, "weights path is empty");
  uint64_t table_bytes = 0;
  for (uint32_t i = 0; i < m->num_weights; i++)
    table_bytes += 4 + strlen(m->weights[i].name) + 8 + 8 * (uint64_t)m->weights[i].rank + 16;
  if (table_bytes > GC_WEIGHTS_MAX_TABLE)
    return GC_ERROR(GC_RESOURCE_EXHAUSTED, "model '%s' has too many weights for a weights file", m->name);
  size_t head_bytes = GC_WEIGHTS_HEADER + GC_WEIGHTS_TABLE_HEADER + (size_t)table_bytes;
  unsigned char* head = (unsigned char*)gc__alloc(a, head_bytes, 64);
  if (head == NULL) return GC_ERROR(GC_RESOURCE_EXHAUSTED, "cannot allocate a weights file header");
  unsigned char* table = head + GC_WEIGHTS_HEADER + GC_WEIGHTS_TABLE_HEADER;
  size_t p = 0;
  for (uint32_t i = 0; i < m->num_weights; i++) {
    const gc_weight_def_t* w = &m->weights[i];
    uint32_t len = (uint32_t)strlen(w->name);
    gc__put32(table + p, len);
    memcpy(table + p + 4, w->name, len);
    p += 4 + len;
    memcpy(table + p, &w->dtype, 4);
    memcpy(table + p + 4, &w->rank, 4);
    p += 8;
    for (int32_t d = 0; d < w->rank; d++, p += 8) gc__put64(table + p, (uint64_t)w->dims[d]);
    gc__put64(table + p, w->offset);
    gc__put64(table + p + 8, w->nbytes);
    p += 16;
  }
  memcpy(head, "GCWEIGHT", 8);
  gc__put32(head + 8, GC_WEIGHTS_V3);
  gc__put32(head + 12, gc__crc32c(weights, (size_t)m->weights_nbytes));
  gc__put64(head + 16, m->weights_layout_digest);
  gc__put64(head + 24, m->weights_nbytes);
  gc__put32(head + 36, 0);
  gc__put32(head + 40, m->num_weights);
  gc__put32(head + 44, (uint32_t)table_bytes);
  gc__put32(head + 32, gc__crc32c(head + 40, (size_t)table_bytes + 8));

  size_t cap = strlen(path) + 64;
  char* tmp = (char*)gc__alloc(a, cap, 64);
  if (tmp == NULL) {
    gc__free(a, head);
    return GC_ERROR(GC_RESOURCE_EXHAUSTED, "cannot allocate a file name");
  }
  int fd = -1;
  gc_status_t status = NULL;
  int err = gc__create_temp(path, weights, tmp, cap, &fd);
  if (err != 0) {
    status = gc__write_error(err, "cannot create a temporary file beside it", path);
    goto done;
  }
  if ((err = gc__write_all(fd, head, head_bytes)) != 0 ||
      (err = gc__write_all(fd, weights, (size_t)m->weights_nbytes)) != 0 || (fsync(fd) != 0 && (err = errno))) {
    status = gc__write_error(err, "writing failed", path);
  }
  if (close(fd) != 0 && status == NULL) status = gc__write_error(errno, "closing failed", path);
  if (status == NULL && rename(tmp, path) != 0)
    status = gc__write_error(errno, "cannot rename the temporary file", path);
  if (status != NULL) unlink(tmp);
done:
  gc__free(a, tmp);
  gc__free(a, head);
  return status;
}
