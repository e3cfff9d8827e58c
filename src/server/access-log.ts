// The access log: one structured line per sampled request (accessLog.sampleRate, decided when the
// request arrives), through a pino child logger with component "access". Lines are buffered as
// plain records and written from a timer, so serialising and writing them never happens inside a
// request's handler; a full buffer drops lines (counted) rather than grow.

import type { Logger } from 'pino';

export interface AccessRecord {
  method: string;
  path: string;
  status: number;
  duration_ms: number;
  model: string | null;
  version: string | null;
  variant: string | null;
  request_id: string | null;
  key_id: string | null;
  trace_id?: string;
}

export const ACCESS_FLUSH_MS = 200;
export const ACCESS_MAX_BUFFERED = 10_000;

export class AccessLog {
  private buffer: AccessRecord[] = [];
  private timer: NodeJS.Timeout | null = null;
  private readonly out: Logger;
  /** Lines written and dropped (buffer full) since start. */
  written = 0;
  dropped = 0;

  constructor(
    log: Logger,
    private readonly sampleRate: number,
  ) {
    this.out = log.child({ component: 'access' });
  }

  /** Whether the request arriving now gets a line. */
  sample(): boolean {
    return this.sampleRate >= 1 || (this.sampleRate > 0 && Math.random() < this.sampleRate);
  }

  push(r: AccessRecord): void {
    if (this.buffer.length >= ACCESS_MAX_BUFFERED) {
      this.dropped++;
      return;
    }
    this.buffer.push(r);
    if (this.timer === null) {
      this.timer = setTimeout(this.flush, ACCESS_FLUSH_MS);
      this.timer.unref();
    }
  }

  readonly flush = (): void => {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    const lines = this.buffer;
    this.buffer = [];
    for (const r of lines) this.out.info(r, 'request');
    this.written += lines.length;
  };

  close(): void {
    this.flush();
  }
}
