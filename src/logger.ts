// Structured JSON logs (pino) to stdout; one logger per process, children per component.

import { pino, type Logger } from 'pino';

export type { Logger } from 'pino';

export function createLogger(level: string): Logger {
  return pino({ level, base: { service: 'scoreline' }, timestamp: pino.stdTimeFunctions.isoTime });
}
