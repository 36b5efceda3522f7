// tcp_sink ADDRESS PORT: accept one TCP connection, read it to the end, and print
// "TCP-SINK bytes=N ns=T" (T from the first byte to the end). The host side of bench/io.ts's
// guest-to-host throughput test; C, so the receiver costs the lab's emulated CPUs little.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static uint64_t ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

int main(int argc, char **argv) {
  if (argc != 3) { fprintf(stderr, "usage: tcp_sink ADDRESS PORT\n"); return 2; }
  int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[2])) };
  if (inet_pton(AF_INET, argv[1], &a.sin_addr) != 1) { fprintf(stderr, "bad address\n"); return 2; }
  if (bind(s, (struct sockaddr *)&a, sizeof a) < 0 || listen(s, 1) < 0) { perror("bind/listen"); return 1; }
  printf("TCP-SINK listening\n");
  fflush(stdout);
  int c = accept(s, NULL, NULL);
  if (c < 0) { perror("accept"); return 1; }
  static char buf[1 << 20];
  uint64_t bytes = 0, first = 0;
  for (;;) {
    ssize_t n = read(c, buf, sizeof buf);
    if (n < 0) { perror("read"); return 1; }
    if (n == 0) break;
    if (bytes == 0) first = ns();
    bytes += (uint64_t)n;
  }
  printf("TCP-SINK bytes=%llu ns=%llu\n", (unsigned long long)bytes,
         (unsigned long long)(bytes ? ns() - first : 0));
  return 0;
}
