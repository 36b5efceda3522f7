// Tests for the eventfd watcher: readiness reaches the main thread, stop ends the wait.
import assert from "node:assert/strict";
import { test } from "node:test";
import { FdWatcher } from "./epoll.js";
import { close, EFD_NONBLOCK, eventfd, write } from "./libc.js";

test("a signalled eventfd calls its handler on the main thread; stop() ends the wait", async () => {
  const w = new FdWatcher();
  const a = eventfd(0, EFD_NONBLOCK);
  const b = eventfd(0, EFD_NONBLOCK);
  const seen: string[] = [];
  let wake!: () => void;
  const twice = new Promise<void>((r) => {
    wake = r;
  });
  w.addEventFd(a, () => {
    seen.push("a");
    if (seen.length === 2) wake();
  });
  w.addEventFd(b, () => {
    seen.push("b");
    if (seen.length === 2) wake();
  });
  w.start();
  write(a, new BigUint64Array([1n]));
  setTimeout(() => write(b, new BigUint64Array([3n])), 20);
  await twice;
  assert.deepEqual(seen, ["a", "b"]);
  await w.stop();
  w.close();
  close(a);
  close(b);
});
