// The circuit breaker in front of the Redis store: after `failures` timeouts or connection errors
// in a row it opens, and requests stop waiting on a store that does not answer (they take the L1
// cache and the fallbacks at once; writes are refused before sending). While open, one cheap probe
// runs every `probeMs`; when it answers, the breaker goes half-open and lets one real request
// through, whose outcome closes it or opens it again.
//
// Per request the store reads `admitting` (a field) and, only when it is true, calls admit().

export type BreakerState = 'closed' | 'open' | 'half-open';

/** What admit() answers: refused (do not send), a normal request, or the half-open trial. */
export const REFUSED = 0;
export const ADMITTED = 1;
export const TRIAL = 2;
export type Admission = typeof REFUSED | typeof ADMITTED | typeof TRIAL;

export interface BreakerOptions {
  /** Consecutive failures that open the breaker. */
  failures: number;
  /** How often the open breaker probes the store. */
  probeMs: number;
  /** One cheap command with the store's timeout; resolves when the store answers. */
  probe(): Promise<unknown>;
  /** closed -> open, once per outage: the failures counted and the last one's cause. */
  onOpen?(failures: number, cause: string): void;
  /** -> closed after an outage: how long requests did not wait on the store. */
  onClose?(openMs: number): void;
  /** `admitting` changed. */
  onChange?(): void;
}

export class CircuitBreaker {
  /** False while open and during a half-open trial: callers must not send (or wait). */
  admitting = true;
  #state: BreakerState = 'closed';
  #failures = 0;
  #openedAt = 0;
  #timer: NodeJS.Timeout | null = null;
  #probing = false;
  #stopped = false;

  constructor(private readonly opts: BreakerOptions) {
    if (!(opts.failures >= 1)) throw new RangeError(`breaker failures must be >= 1, got ${opts.failures}`);
  }

  get state(): BreakerState {
    return this.#state;
  }

  /** Failures in a row counted so far (while closed). */
  get failures(): number {
    return this.#failures;
  }

  /** Call before sending; in half-open the first caller becomes the trial and the rest are refused. */
  admit(): Admission {
    if (!this.admitting) return REFUSED;
    if (this.#state === 'closed') return ADMITTED;
    this.#setAdmitting(false);
    return TRIAL;
  }

  /** The store answered a request admitted as `admission`. */
  success(admission: Admission): void {
    if (this.#state === 'closed') {
      this.#failures = 0;
      return;
    }
    // While open, late answers to requests sent before it opened prove little: the probe decides.
    if (this.#state === 'half-open' && admission === TRIAL) this.#close();
  }

  /** A request admitted as `admission` timed out or lost its connection. */
  failure(admission: Admission, cause: string): void {
    if (this.#state === 'closed') {
      if (++this.#failures >= this.opts.failures) this.#open(cause);
      return;
    }
    if (this.#state === 'half-open' && admission === TRIAL) {
      this.#state = 'open';
      this.#startProbing();
    }
  }

  /** A request admitted as `admission` was not sent after all: a trial slot goes to the next caller. */
  release(admission: Admission): void {
    if (this.#state === 'half-open' && admission === TRIAL) this.#setAdmitting(true);
  }

  stop(): void {
    this.#stopped = true;
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
  }

  #open(cause: string): void {
    this.#state = 'open';
    this.#openedAt = performance.now();
    this.#setAdmitting(false);
    this.opts.onOpen?.(this.#failures, cause);
    this.#startProbing();
  }

  #close(): void {
    this.#state = 'closed';
    this.#failures = 0;
    this.#setAdmitting(true);
    this.opts.onClose?.(performance.now() - this.#openedAt);
  }

  #startProbing(): void {
    if (this.#timer !== null || this.#stopped) return;
    this.#timer = setInterval(() => this.#probe(), this.opts.probeMs);
    this.#timer.unref();
  }

  #probe(): void {
    if (this.#probing || this.#state !== 'open') return;
    this.#probing = true;
    this.opts.probe().then(
      () => {
        this.#probing = false;
        if (this.#state !== 'open' || this.#stopped) return;
        if (this.#timer !== null) clearInterval(this.#timer);
        this.#timer = null;
        this.#state = 'half-open';
        this.#setAdmitting(true);
      },
      () => {
        this.#probing = false;
      },
    );
  }

  #setAdmitting(v: boolean): void {
    if (this.admitting === v) return;
    this.admitting = v;
    this.opts.onChange?.();
  }
}
