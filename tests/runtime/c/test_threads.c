/* test_threads.c -- the thread contract: 8 threads, each with its own instance of the same
 * model, run different inputs at the same time, over and over; every result must equal (bit
 * for bit) what one instance computes alone. Also checks that intra-op threads (an instance
 * with 2 threads) give the same bits.
 *
 * The model: "abi_model" (see test_abi.c). Usage: test_threads [rounds [threads per instance [profile]]]
 * ("profile": every instance times its kernels, its event table too small for all of them).
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "abi_model.h"

enum { THREADS = 8, BATCH = 4, SEQ = 6 };

typedef struct {
  int32_t ids[BATCH * SEQ];
  float x[BATCH * 8];
  float y[BATCH * 4];
  float pooled[BATCH * 8];
} sample_t;

typedef struct {
  const gc_model_t* model;
  const sample_t* expected;
  int seed;
  int rounds;
  int threads;
  int profile;
  int failures;
  char error[256];
} job_t;

static void fill(sample_t* s, int seed) {
  for (int i = 0; i < BATCH * SEQ; i++) s->ids[i] = (seed * 13 + i * 7) % 50;
  for (int i = 0; i < BATCH * 8; i++) s->x[i] = (float)((seed * 31 + i * 17) % 23) / 7.0f - 1.5f;
}

static gc_status_t run(gc_instance_t* inst, sample_t* s) {
  gc_tensor_t in[2] = {{GC_INT32, 2, {BATCH, SEQ}, s->ids, sizeof s->ids},
                       {GC_FLOAT32, 2, {BATCH, 8}, s->x, sizeof s->x}};
  gc_tensor_t out[2] = {{GC_FLOAT32, 0, {0}, s->y, sizeof s->y}, {GC_FLOAT32, 0, {0}, s->pooled, sizeof s->pooled}};
  return gc_instance_run(inst, in, 2, out, 2);
}

static gc_instance_t* create(const gc_model_t* m, int threads, int profile, char* error) {
  gc_options_t o;
  gc_options_init(&o);
  o.num_threads = threads;
  o.profile = profile;
  o.profile_events = profile ? 40 : 0;
  gc_instance_t* inst = NULL;
  gc_status_t s = gc_instance_create(m, &o, &inst);
  if (s) {
    snprintf(error, 256, "create: %s", gc_status_message(s));
    gc_status_release(s);
  }
  return inst;
}

static void* worker(void* arg) {
  job_t* job = (job_t*)arg;
  gc_instance_t* inst = create(job->model, job->threads, job->profile, job->error);
  if (inst == NULL) {
    job->failures++;
    return NULL;
  }
  sample_t s;
  for (int r = 0; r < job->rounds; r++) {
    fill(&s, job->seed);
    gc_status_t st = run(inst, &s);
    if (st) {
      snprintf(job->error, sizeof job->error, "run: %s", gc_status_message(st));
      gc_status_release(st);
      job->failures++;
      break;
    }
    if (memcmp(s.y, job->expected->y, sizeof s.y) != 0 || memcmp(s.pooled, job->expected->pooled, sizeof s.pooled) != 0) {
      snprintf(job->error, sizeof job->error, "round %d: results differ from the single-threaded run", r);
      job->failures++;
      break;
    }
  }
  gc_instance_release(inst);
  return NULL;
}

int main(int argc, char** argv) {
  int rounds = argc > 1 ? atoi(argv[1]) : 200;
  int per_instance = argc > 2 ? atoi(argv[2]) : 1;
  int profile = argc > 3 && strcmp(argv[3], "profile") == 0;
  const gc_model_t* m = gc_model_abi_model();
  char error[256] = "";
  sample_t expected[THREADS];
  gc_instance_t* alone = create(m, 1, 0, error);
  gc_instance_t* two = create(m, 2, 0, error);
  if (alone == NULL || two == NULL) {
    fprintf(stderr, "%s\n", error);
    return 1;
  }
  for (int t = 0; t < THREADS; t++) {
    fill(&expected[t], t);
    sample_t again = expected[t];
    gc_status_t s1 = run(alone, &expected[t]);
    gc_status_t s2 = run(two, &again);
    if (s1 || s2) {
      fprintf(stderr, "run: %s\n", gc_status_message(s1 ? s1 : s2));
      return 1;
    }
    if (memcmp(again.y, expected[t].y, sizeof again.y) != 0) {
      fprintf(stderr, "an instance with 2 threads differs from one with 1 (input %d)\n", t);
      return 1;
    }
  }
  gc_instance_release(alone);
  gc_instance_release(two);
  pthread_t threads[THREADS];
  job_t jobs[THREADS];
  for (int t = 0; t < THREADS; t++) {
    jobs[t] = (job_t){m, &expected[t], t, rounds, per_instance, profile, 0, ""};
    pthread_create(&threads[t], NULL, worker, &jobs[t]);
  }
  int failures = 0;
  for (int t = 0; t < THREADS; t++) {
    pthread_join(threads[t], NULL);
    if (jobs[t].failures) {
      fprintf(stderr, "thread %d: %s\n", t, jobs[t].error);
      failures++;
    }
  }
  if (failures) return 1;
  printf("ok %d threads x %d rounds, %d thread(s) per instance%s\n", THREADS, rounds, per_instance,
         profile ? ", profiled" : "");
  return 0;
}
