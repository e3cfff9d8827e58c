// The access log: one structured line per sampled request (accessLog.sampleRate, decided when the
// request arrives), formatted by pino like every other line (the server's bindings plus component
// "access"). Records are buffered as plain objects and written from a timer, all lines of a flush
// in one write to the server's log destination, so neither serialising nor writing happens inside
// a request's handler and the cost per line is a formatting, not a system call; a full buffer drops
// lines (counted) rather than grow.

import { pino, type Logger } from 'pino';

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
  /** Formats into `text`; `dest` is where the server's logger writes. */
  private readonly format: Logger;
  private readonly dest: { write(s: string): unknown };
  private text = '';
  private readonly sampleRate: number;
  /** Lines written and dropped (buffer full) since start. */
  written = 0;
  dropped = 0;

  constructor(log: Logger, sampleRate: number) {
    // Lines at info: a server logging only warnings and errors keeps no access log.
    this.sampleRate = log.isLevelEnabled('info') ? sampleRate : 0;
    this.dest = (log as unknown as Record<symbol, { write(s: string): unknown }>)[pino.symbols.streamSym]!;
    const collect = {
      write: (line: string) => {
        this.text += line;
      },
    };
    this.format = pino({ level: 'info', base: null, timestamp: pino.stdTimeFunctions.isoTime }, collect).child({
      ...log.bindings(),
      component: 'access',
    });
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
    if (lines.length === 0) return;
    this.buffer = [];
    for (const r of lines) this.format.info(r, 'request');
    const text = this.text;
    this.text = '';
    this.dest.write(text);
    this.written += lines.length;
  };

  close(): void {
    this.flush();
  }
}
