/*
 * Run a libFuzzer target without libFuzzer, so the ordinary (gcc, and
 * sanitizer) test runs exercise it too: every file of the seed corpus
 * directories given on the command line, then a fixed number of
 * deterministic mutations of them (byte flips, insertions, truncations,
 * splices). The real fuzzing runs under clang (fuzz/, ./build.sh fuzz).
 *
 *   fuzz_replay [-n MUTATIONS] CORPUS_DIR...
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REPLAY_MAX_INPUT 4096
#define MAX_SEEDS 4096

static uint8_t *seeds[MAX_SEEDS];
static size_t seed_len[MAX_SEEDS];
static size_t nseeds;

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t next(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

static void load_dir(const char *dir) {
  DIR *d = opendir(dir);
  if (d == NULL) {
    perror(dir);
    exit(2);
  }
  struct dirent *e;
  while ((e = readdir(d)) != NULL && nseeds < MAX_SEEDS) {
    if (e->d_name[0] == '.')
      continue;
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
      continue;
    uint8_t *buf = malloc(REPLAY_MAX_INPUT);
    size_t n = fread(buf, 1, REPLAY_MAX_INPUT, f);
    fclose(f);
    seeds[nseeds] = buf;
    seed_len[nseeds++] = n;
  }
  closedir(d);
}

static size_t mutate(uint8_t *buf, size_t n) {
  unsigned steps = 1 + (unsigned)(next() % 4);
  for (unsigned s = 0; s < steps; s++) {
    switch (next() % 5) {
    case 0: /* flip a byte */
      if (n > 0)
        buf[next() % n] ^= (uint8_t)(1u << (next() % 8));
      break;
    case 1: /* random byte */
      if (n > 0)
        buf[next() % n] = (uint8_t)next();
      break;
    case 2: /* insert */
      if (n < REPLAY_MAX_INPUT) {
        size_t at = n ? next() % n : 0;
        memmove(buf + at + 1, buf + at, n - at);
        buf[at] = (uint8_t)next();
        n++;
      }
      break;
    case 3: /* truncate */
      if (n > 1)
        n = 1 + next() % n;
      break;
    default: { /* splice in a piece of another seed */
      size_t k = next() % nseeds;
      if (seed_len[k] == 0 || n == 0)
        break;
      size_t from = next() % seed_len[k];
      size_t len = 1 + next() % (seed_len[k] - from);
      size_t at = next() % n;
      if (at + len > REPLAY_MAX_INPUT)
        len = REPLAY_MAX_INPUT - at;
      memcpy(buf + at, seeds[k] + from, len);
      if (at + len > n)
        n = at + len;
      break;
    }
    }
  }
  return n;
}

int main(int argc, char **argv) {
  long mutations = 2000;
  int i = 1;
  if (i + 1 < argc && !strcmp(argv[i], "-n")) {
    mutations = atol(argv[i + 1]);
    i += 2;
  }
  for (; i < argc; i++)
    load_dir(argv[i]);
  if (nseeds == 0) {
    fprintf(stderr, "no seeds\n");
    return 2;
  }
  for (size_t k = 0; k < nseeds; k++)
    LLVMFuzzerTestOneInput(seeds[k], seed_len[k]);
  static uint8_t buf[REPLAY_MAX_INPUT];
  for (long m = 0; m < mutations; m++) {
    size_t k = next() % nseeds;
    memcpy(buf, seeds[k], seed_len[k]);
    size_t n = mutate(buf, seed_len[k]);
    LLVMFuzzerTestOneInput(buf, n);
  }
  printf("%zu seeds and %ld mutations ran\n", nseeds, mutations);
  for (size_t k = 0; k < nseeds; k++)
    free(seeds[k]);
  return 0;
}
