// I/O rate limits for devices: a token bucket for bandwidth (bytes per second) and one for
// operations (requests per second), each with a burst, as Firecracker's rate limiter has. A
// device asks before it starts a request; when a bucket is short the answer is how long to
// wait, and the device holds the request (the guest sees a slower disk, never an error).
// A request larger than a whole burst is let through when the bucket is full and leaves it
// in debt, so no request size can stall a queue forever.

export interface BucketConfig {
  /** Tokens per second (bytes or operations). */
  rate: number;
  /** Bucket size; default one second's worth. */
  burst?: number;
}

export interface LimitConfig {
  bandwidth?: BucketConfig;
  ops?: BucketConfig;
}

export class TokenBucket {
  readonly rate: number;
  readonly burst: number;
  private tokens: number;
  private last: number;

  constructor(
    config: BucketConfig,
    private readonly now: () => number = () => performance.now(),
  ) {
    if (!(config.rate > 0) || !Number.isFinite(config.rate))
      throw new RangeError(`rate ${config.rate} must be a positive number`);
    const burst = config.burst ?? config.rate;
    if (!(burst > 0) || !Number.isFinite(burst))
      throw new RangeError(`burst ${burst} must be a positive number`);
    this.rate = config.rate;
    this.burst = burst;
    this.tokens = burst;
    this.last = this.now();
  }

  private refill(): void {
    const t = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((t - this.last) / 1000) * this.rate);
    this.last = t;
  }

  /** Milliseconds until `n` tokens may be taken (0: now). */
  wait(n: number): number {
    this.refill();
    const need = Math.min(n, this.burst);
    return this.tokens >= need ? 0 : ((need - this.tokens) / this.rate) * 1000;
  }

  take(n: number): void {
    this.refill();
    this.tokens -= n;
  }
}

export class RateLimiter {
  private bandwidth: TokenBucket | undefined;
  private ops: TokenBucket | undefined;
  /** Time requests spent held back, in ms (for metrics). */
  throttledMs = 0;
  throttledRequests = 0;

  constructor(
    config: LimitConfig = {},
    private readonly now: () => number = () => performance.now(),
  ) {
    this.configure(config);
  }

  /** Replace the limits (at runtime too); an empty config removes them. */
  configure(config: LimitConfig): void {
    this.bandwidth = config.bandwidth ? new TokenBucket(config.bandwidth, this.now) : undefined;
    this.ops = config.ops ? new TokenBucket(config.ops, this.now) : undefined;
  }

  get limited(): boolean {
    return this.bandwidth !== undefined || this.ops !== undefined;
  }

  config(): LimitConfig {
    const c: LimitConfig = {};
    if (this.bandwidth) c.bandwidth = { rate: this.bandwidth.rate, burst: this.bandwidth.burst };
    if (this.ops) c.ops = { rate: this.ops.rate, burst: this.ops.burst };
    return c;
  }

  /**
   * For a request whose size is known only once it is done (a received frame): 0 when
   * neither bucket is in debt, else the milliseconds to wait. Nothing is taken: charge() takes
   * the request's bytes and one operation afterwards, so one frame may overdraw.
   */
  admit(): number {
    return Math.max(this.bandwidth?.wait(0) ?? 0, this.ops?.wait(1) ?? 0);
  }

  /** Take one operation and `bytes` after the fact (the buckets may go into debt). */
  charge(bytes: number): void {
    this.bandwidth?.take(bytes);
    this.ops?.take(1);
  }

  /** 0 and the tokens taken, or the milliseconds to wait before asking again. */
  consume(bytes: number): number {
    const wait = Math.max(this.bandwidth?.wait(bytes) ?? 0, this.ops?.wait(1) ?? 0);
    if (wait > 0) return wait;
    this.bandwidth?.take(bytes);
    this.ops?.take(1);
    return 0;
  }
}
