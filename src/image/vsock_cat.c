/* vsock-cat: an AF_VSOCK stream tool for Vessel's default guest, whose busybox has none.
 *
 *   vsock-cat listen PORT        accept one connection on PORT (from any CID)
 *   vsock-cat connect CID PORT   connect to CID:PORT (CID 2 is the host)
 *
 * Either way stdin goes to the connection and the connection to stdout until both are
 * done. At EOF on stdin only the sending side is shut down (shutdown(SHUT_WR)), so the peer
 * reads EOF while its answer still comes back. Exit status 0, or 1 with one line on stderr
 * ("vsock-cat: connect: Connection reset by peer" when nothing listens on the host side).
 * `listen` says "vsock-cat: listening on port N" on stderr once it can take a connection.
 *
 * `vessel image build` compiles it with `gcc -static` and copies it into the initramfs as
 * /usr/bin/vsock-cat. */
#include <errno.h>
#include <linux/vm_sockets.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static char buf[65536];

static int fail(const char *what) {
  fprintf(stderr, "vsock-cat: %s: %s\n", what, strerror(errno));
  return 1;
}

static unsigned number(const char *s) {
  char *end;
  errno = 0;
  unsigned long v = strtoul(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v > 0xffffffffUL) {
    fprintf(stderr, "vsock-cat: %s is not a number below 2^32\n", s);
    exit(1);
  }
  return (unsigned)v;
}

static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Copy both ways until the peer has finished sending and stdin has ended. */
static int relay(int s) {
  int sock_open = 1, in_open = 1;
  while (sock_open || in_open) {
    struct pollfd p[2] = {{.fd = sock_open ? s : -1, .events = POLLIN},
                          {.fd = in_open ? 0 : -1, .events = POLLIN}};
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return fail("poll");
    }
    if (p[0].revents != 0) {
      ssize_t n = read(s, buf, sizeof buf);
      if (n < 0 && errno != EINTR) return fail("read");
      if (n == 0) sock_open = 0;
      if (n > 0 && write_all(1, buf, (size_t)n) < 0) return fail("write to stdout");
    }
    if (p[1].revents != 0) {
      ssize_t n = read(0, buf, sizeof buf);
      if (n < 0 && errno != EINTR) return fail("read stdin");
      if (n == 0) {
        in_open = 0;
        if (shutdown(s, SHUT_WR) < 0) return fail("shutdown");
      }
      if (n > 0 && write_all(s, buf, (size_t)n) < 0) return fail("write");
    }
  }
  return close(s) < 0 ? fail("close") : 0;
}

int main(int argc, char **argv) {
  /* A peer that is gone makes write fail with EPIPE, reported like any other error. */
  signal(SIGPIPE, SIG_IGN);
  struct sockaddr_vm addr;
  memset(&addr, 0, sizeof addr);
  addr.svm_family = AF_VSOCK;
  int s = socket(AF_VSOCK, SOCK_STREAM, 0);
  if (argc == 3 && strcmp(argv[1], "listen") == 0) {
    addr.svm_cid = VMADDR_CID_ANY;
    addr.svm_port = number(argv[2]);
    if (s < 0) return fail("socket");
    if (bind(s, (struct sockaddr *)&addr, sizeof addr) < 0) return fail("bind");
    if (listen(s, 1) < 0) return fail("listen");
    fprintf(stderr, "vsock-cat: listening on port %u\n", addr.svm_port);
    int c = accept(s, NULL, NULL);
    if (c < 0) return fail("accept");
    close(s);
    return relay(c);
  }
  if (argc == 4 && strcmp(argv[1], "connect") == 0) {
    addr.svm_cid = number(argv[2]);
    addr.svm_port = number(argv[3]);
    if (s < 0) return fail("socket");
    if (connect(s, (struct sockaddr *)&addr, sizeof addr) < 0) return fail("connect");
    return relay(s);
  }
  fprintf(stderr, "usage: vsock-cat listen PORT | vsock-cat connect CID PORT\n");
  return 1;
}
