/*
 * Random 4 KiB reads over NBD with a fixed queue depth, for bench/nbd.js:
 * the same client against the revpatch export and nbdkit's file plugin.
 *
 *   nbd_random_read URI READS DEPTH [SEED]
 *
 * Keeps DEPTH reads in flight on one connection (libnbd's asynchronous
 * API), each at a block-aligned offset drawn from a fixed-seed generator,
 * so every run reads the same offsets. Prints one JSON line: reads,
 * seconds, reads per second. Exits 1 on any failed read.
 * Build: cc -O2 -o nbd_random_read nbd_random_read.c -lnbd (libnbd-dev).
 */
#include <inttypes.h>
#include <libnbd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define READ_SIZE 4096

struct slot {
  char buf[READ_SIZE];
  int busy;
};

static uint64_t failed;

static int on_done(void *user_data, int *error) {
  struct slot *s = user_data;
  if (*error != 0) failed++;
  s->busy = 0;
  return 1; /* retire the command */
}

static uint64_t next_random(uint64_t *state) {
  uint64_t x = *state; /* xorshift64* */
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *state = x;
  return x * UINT64_C(2685821657736338717);
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s URI READS DEPTH [SEED]\n", argv[0]);
    return 2;
  }
  const char *uri = argv[1];
  const uint64_t reads = strtoull(argv[2], NULL, 10);
  const int depth = atoi(argv[3]);
  uint64_t state = argc > 4 ? strtoull(argv[4], NULL, 10) : 1;
  if (reads == 0 || depth < 1 || depth > 1024 || state == 0) {
    fprintf(stderr, "READS must be > 0, DEPTH 1..1024, SEED > 0\n");
    return 2;
  }
  struct nbd_handle *h = nbd_create();
  if (h == NULL || nbd_connect_uri(h, uri) == -1) {
    fprintf(stderr, "%s\n", nbd_get_error());
    return 1;
  }
  const int64_t size = nbd_get_size(h);
  if (size < READ_SIZE) {
    fprintf(stderr, "export too small: %" PRId64 "\n", size);
    return 1;
  }
  const uint64_t blocks = (uint64_t)size / READ_SIZE;
  struct slot *slots = calloc((size_t)depth, sizeof *slots);
  if (slots == NULL) return 1;

  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  uint64_t issued = 0;
  while (issued < reads || nbd_aio_in_flight(h) > 0) {
    for (int i = 0; i < depth && issued < reads; i++) {
      if (slots[i].busy) continue;
      const uint64_t offset = (next_random(&state) % blocks) * READ_SIZE;
      slots[i].busy = 1;
      nbd_completion_callback cb = {.callback = on_done, .user_data = &slots[i], .free = NULL};
      if (nbd_aio_pread(h, slots[i].buf, READ_SIZE, offset, cb, 0) == -1) {
        fprintf(stderr, "%s\n", nbd_get_error());
        return 1;
      }
      issued++;
    }
    if (nbd_poll(h, -1) == -1) {
      fprintf(stderr, "%s\n", nbd_get_error());
      return 1;
    }
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  const double seconds = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
  nbd_shutdown(h, 0);
  nbd_close(h);
  free(slots);
  if (failed != 0) {
    fprintf(stderr, "%" PRIu64 " reads failed\n", failed);
    return 1;
  }
  printf("{\"reads\":%" PRIu64 ",\"depth\":%d,\"seconds\":%.6f,\"readsPerSecond\":%.1f}\n", reads, depth,
         seconds, (double)reads / seconds);
  return 0;
}
