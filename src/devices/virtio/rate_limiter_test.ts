// Token buckets with a fake clock: rates, bursts, debt for oversized requests, runtime change.

import assert from "node:assert/strict";
import { test } from "node:test";
import { RateLimiter, TokenBucket } from "./rate_limiter.js";

test("a bucket starts full, refills at its rate, and never holds more than its burst", () => {
  let now = 0;
  const b = new TokenBucket({ rate: 100, burst: 10 }, () => now);
  assert.equal(b.wait(10), 0);
  b.take(10);
  assert.equal(b.wait(1), 10); // 1 token at 100/s
  now += 50;
  assert.equal(b.wait(5), 0);
  now += 10_000;
  b.take(10);
  assert.equal(b.wait(1), 10, "capped at the burst, not 1000 s of tokens");
});

test("a request bigger than the burst goes when the bucket is full and leaves a debt", () => {
  let now = 0;
  const l = new RateLimiter({ bandwidth: { rate: 1000, burst: 100 } }, () => now);
  assert.equal(l.consume(500), 0);
  const wait = l.consume(1);
  assert.ok(wait > 400 && wait <= 401, `debt of 400 tokens: ${wait} ms`);
  now += 500;
  assert.equal(l.consume(1), 0);
});

test("both buckets must allow; configure() replaces or removes the limits", () => {
  const now = 0;
  const l = new RateLimiter({ bandwidth: { rate: 1e9 }, ops: { rate: 2, burst: 1 } }, () => now);
  assert.equal(l.consume(10), 0);
  assert.equal(l.consume(10), 500);
  l.configure({});
  assert.equal(l.limited, false);
  assert.equal(l.consume(10), 0);
  assert.throws(() => l.configure({ ops: { rate: -1 } }), /rate -1/);
});
