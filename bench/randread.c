// randread DEVICE SECONDS [JOBS]: 4 KiB O_DIRECT preads at random aligned offsets of a
// block device for SECONDS, from JOBS processes (default 1: one request in flight), then
// prints "RANDREAD iops=N reads=N seconds=S". The guest side of bench/io.ts's random-read
// test: busybox has no fio. Built static, so it runs in the default guest's initramfs.
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BLOCK 4096

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

// One job: read until `seconds` have passed; returns how many reads completed.
static uint64_t job(const char *path, double seconds, uint64_t seed) {
  int fd = open(path, O_RDONLY | O_DIRECT);
  if (fd < 0) { perror("open"); exit(1); }
  uint64_t size = 0;
  if (ioctl(fd, BLKGETSIZE64, &size) < 0 || size < BLOCK) { perror("BLKGETSIZE64"); exit(1); }
  uint64_t blocks = size / BLOCK;
  void *buf;
  if (posix_memalign(&buf, BLOCK, BLOCK) != 0) { perror("posix_memalign"); exit(1); }
  uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1, reads = 0;
  double end = now() + seconds;
  while (now() < end) {
    // xorshift64: cheap, and independent per job.
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
    if (pread(fd, buf, BLOCK, (off_t)((x % blocks) * BLOCK)) != BLOCK) { perror("pread"); exit(1); }
    reads++;
  }
  return reads;
}

int main(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "usage: randread DEVICE SECONDS [JOBS]\n"); return 2; }
  double seconds = atof(argv[2]);
  int jobs = argc > 3 ? atoi(argv[3]) : 1;
  if (seconds <= 0 || jobs < 1 || jobs > 64) { fprintf(stderr, "bad arguments\n"); return 2; }
  uint64_t *counts = mmap(NULL, 64 * sizeof(uint64_t), PROT_READ | PROT_WRITE,
                          MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (counts == MAP_FAILED) { perror("mmap"); return 1; }
  double start = now();
  for (int j = 0; j < jobs; j++) {
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); return 1; }
    if (pid == 0) { counts[j] = job(argv[1], seconds, (uint64_t)j + 1); _exit(0); }
  }
  int failed = 0, status;
  while (wait(&status) > 0) failed |= !WIFEXITED(status) || WEXITSTATUS(status) != 0;
  if (failed) return 1;
  double elapsed = now() - start;
  uint64_t total = 0;
  for (int j = 0; j < jobs; j++) total += counts[j];
  printf("RANDREAD iops=%.0f reads=%llu seconds=%.3f\n", total / elapsed,
         (unsigned long long)total, elapsed);
  return 0;
}
