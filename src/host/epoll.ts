// Waiting on file descriptors the Node event loop cannot watch itself (eventfds from KVM's
// ioeventfd). One epoll set; epoll_wait runs as a koffi asynchronous call, which holds one
// thread of libuv's pool for as long as the watcher runs (no JavaScript isolate is spent on
// it), and readiness is delivered as a callback on the main thread. A private eventfd in the set stops the wait.

import koffi from "koffi";
import { HostError } from "./errors.js";
import { close, EFD_NONBLOCK, eventfd, read, write } from "./libc.js";

const lib = koffi.load("libc.so.6");
const epollCreate1 = lib.func("int epoll_create1(int flags)");
const epollCtl = lib.func("int epoll_ctl(int epfd, int op, int fd, void *event)");
const epollWait = lib.func("int epoll_wait(int epfd, void *events, int maxevents, int timeout)");

const EPOLL_CLOEXEC = 0o2000000;
const EPOLL_CTL_ADD = 1;
const EPOLL_CTL_DEL = 2;
const EPOLLIN = 0x1;
const EINTR = 4;
/** struct epoll_event is packed on x86-64: u32 events, u64 data. */
const EVENT_SIZE = 12;
const MAX_EVENTS = 64;

export class FdWatcher {
  private readonly epfd: number;
  private readonly stopFd: number;
  private readonly handlers = new Map<number, () => void>();
  /** Watched fds that are eventfds, whose counter we drain before calling the handler. */
  private readonly eventFds = new Set<number>();
  private readonly events = Buffer.alloc(EVENT_SIZE * MAX_EVENTS);
  private readonly counter = new BigUint64Array(1);
  private running = false;
  private waiting = false;

  constructor() {
    const epfd = epollCreate1(EPOLL_CLOEXEC) as number;
    if (epfd < 0) throw new HostError("epoll_create1", koffi.errno());
    this.epfd = epfd;
    this.stopFd = eventfd(0, EFD_NONBLOCK);
    this.ctl(EPOLL_CTL_ADD, this.stopFd);
  }

  private ctl(op: number, fd: number): void {
    const ev = Buffer.alloc(EVENT_SIZE);
    ev.writeUInt32LE(EPOLLIN, 0);
    ev.writeBigUInt64LE(BigInt(fd), 4);
    if ((epollCtl(this.epfd, op, fd, ev) as number) < 0)
      throw new HostError("epoll_ctl", koffi.errno());
  }

  /** Call `onReady` (on the main thread) each time the eventfd `fd` is signalled. */
  addEventFd(fd: number, onReady: () => void): void {
    this.addFd(fd, onReady);
    this.eventFds.add(fd);
  }

  /**
   * Call `onReady` while `fd` (a TAP device, a socket...) is readable. Level-triggered: the
   * handler must read until EAGAIN, or it is called again on the next wait.
   */
  addFd(fd: number, onReady: () => void): void {
    if (this.handlers.has(fd)) throw new RangeError(`fd ${fd} is already watched`);
    this.handlers.set(fd, onReady);
    this.ctl(EPOLL_CTL_ADD, fd);
  }

  removeFd(fd: number): void {
    if (!this.handlers.delete(fd)) return;
    this.eventFds.delete(fd);
    this.ctl(EPOLL_CTL_DEL, fd);
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.arm();
  }

  private arm(): void {
    if (!this.running || this.waiting) return;
    this.waiting = true;
    epollWait.async(this.epfd, this.events, MAX_EVENTS, -1, (err: unknown, n: number) => {
      this.waiting = false;
      if (err) {
        process.emitWarning(`epoll_wait failed: ${String(err)}`);
        return;
      }
      if (n < 0 && koffi.errno() !== EINTR) {
        process.emitWarning(`epoll_wait failed: errno ${koffi.errno()}`);
        return;
      }
      for (let i = 0; i < n; i++) {
        // The data word holds the fd (ctl() wrote it), so its low half is all of it: no BigInt.
        const fd = this.events.readUInt32LE(i * EVENT_SIZE + 4);
        // Drain an eventfd's counter first so a signal arriving during the handler re-fires.
        if (fd === this.stopFd || this.eventFds.has(fd)) {
          try {
            read(fd, this.counter);
          } catch (e) {
            if (!(e instanceof HostError && e.code === "EAGAIN")) throw e;
          }
        }
        if (fd === this.stopFd) continue;
        this.handlers.get(fd)?.();
      }
      this.arm();
    });
  }

  /** Stop waiting; resolves once the pending epoll_wait has returned. */
  async stop(): Promise<void> {
    this.running = false;
    if (!this.waiting) return;
    write(this.stopFd, new BigUint64Array([1n]));
    while (this.waiting) await new Promise((r) => setTimeout(r, 1));
  }

  close(): void {
    close(this.stopFd);
    close(this.epfd);
  }
}
