// The listening socket: exclusive (a second scoreline on the same port fails at start instead of
// silently taking half the traffic, which uWS's default SO_REUSEPORT allows), or, with several HTTP
// threads, shared by them through SO_REUSEPORT (the kernel spreads connections over the threads; a
// lock of the process keeps out a second scoreline, see threads.ts), and guarded by the
// connection limit. uWS.js v20.30 has no hook for HTTP connections opening or closing, so the limit
// is kept on what the process can see, its open file descriptors (connections plus a steady base of
// files, pipes and worker handles measured once listening): at limits.maxConnections the listen
// socket is closed, so new clients are refused at once (ECONNREFUSED) instead of queueing in the
// kernel while uWS spins on a failing accept() (EMFILE at the descriptor limit); at 75% of the
// limit it listens again. Linux only (it reads /proc/self/fd); elsewhere the limit is not enforced.
// A TLS reload swaps the app behind the port: the old listen socket is closed and the new app listens
// on the same port in the same step, while the old app keeps serving the connections it has.
// Listening again on the port while connections accepted from it are open needs SO_REUSEADDR, which
// uSockets sets only for a non-zero port: port 0 is resolved to a free port first, then bound by number.

import { readdirSync, readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import type { TemplatedApp, Uws, us_listen_socket } from './uws.js';

/** uWS's LIBUS_LISTEN_EXCLUSIVE_PORT: the binary takes it as listen's third argument (the typings lack that overload). */
const EXCLUSIVE_PORT = 1;
type ListenWithOptions = (host: string, port: number, options: number, cb: (s: us_listen_socket | false) => void) => TemplatedApp;

/** Listens on host:port now (uWS binds synchronously), alone or shared (SO_REUSEPORT); false when the port is taken. */
function listenNow(app: TemplatedApp, host: string, port: number, shared: boolean): us_listen_socket | false {
  let socket: us_listen_socket | false = false;
  (app.listen as unknown as ListenWithOptions).call(app, host, port, shared ? 0 : EXCLUSIVE_PORT, (s) => {
    socket = s;
  });
  return socket;
}

/**
 * Listens on host:port, alone (or `shared` with this process's other HTTP threads); rejects with
 * "port P is in use" when another socket holds it. Port 0 picks a free port.
 */
export async function listenExclusive(uws: Uws, app: TemplatedApp, host: string, port: number, shared = false): Promise<us_listen_socket> {
  for (let attempt = 0; port === 0 && attempt < 5; attempt++) {
    const probe = listenNow(app, host, 0, false);
    if (probe === false) break;
    const picked = uws.us_socket_local_port(probe as never);
    uws.us_listen_socket_close(probe);
    const s = listenNow(app, host, picked, shared);
    // Another process took the port in between: pick again.
    if (s !== false) return s;
  }
  const s = listenNow(app, host, port, shared);
  if (s === false) throw new Error(`cannot listen on ${host}:${port}: port ${port} is in use (or not permitted)`);
  return s;
}

/** The soft limit on open file descriptors (RLIMIT_NOFILE), or null where /proc is not there. */
export function openFilesLimit(): number | null {
  try {
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    if (m === null) return null;
    return m[1] === 'unlimited' ? Number.MAX_SAFE_INTEGER : Number(m[1]);
  } catch {
    return null;
  }
}

/** Open descriptors; 'exhausted' when there is none left even to read the count (EMFILE). */
function openFiles(): number | 'exhausted' | null {
  try {
    return readdirSync('/proc/self/fd').length;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EMFILE' || (e as NodeJS.ErrnoException).code === 'ENFILE' ? 'exhausted' : null;
  }
}

export interface GuardOptions {
  readonly uws: Uws;
  app: TemplatedApp;
  readonly host: string;
  readonly port: number;
  /** limits.maxConnections, or null for the default derived from the descriptor limit. */
  readonly maxConnections: number | null;
  readonly log: Logger;
  /** The port is shared with this process's other HTTP threads (SO_REUSEPORT). */
  readonly shared?: boolean;
}

export class ConnectionGuard {
  /** Connections allowed (approximate: open descriptors above the base). */
  readonly limit: number;
  private readonly base: number;
  private socket: us_listen_socket | null;
  private timer: NodeJS.Timeout | null = null;
  private relistening = false;
  private closed = false;
  /** Open connections at the last check (approximate). */
  connections = 0;
  /** Times the listen socket was closed because the limit was reached. */
  pauses = 0;

  private readonly opts: GuardOptions;

  constructor(opts: GuardOptions, socket: us_listen_socket) {
    this.opts = { ...opts, log: opts.log.child({ component: 'listener' }) };
    this.socket = socket;
    const count = openFiles();
    const fds = typeof count === 'number' ? count : null;
    const nofile = openFilesLimit();
    this.base = fds ?? 0;
    // Headroom below the descriptor limit: SQLite files, model loads, log segments and worker
    // restarts still need descriptors when the server is full of connections.
    const derived = nofile === null ? Number.MAX_SAFE_INTEGER : Math.max(16, Math.floor((nofile - this.base) * 0.9) - 64);
    this.limit = opts.maxConnections ?? derived;
    if (fds === null) {
      opts.log.warn('cannot read /proc/self/fd: limits.maxConnections is not enforced on this platform');
      return;
    }
    if (nofile !== null && this.base + this.limit >= nofile) {
      opts.log.warn(
        { maxConnections: this.limit, openFilesLimit: nofile },
        'limits.maxConnections is above what the open-files limit allows; raise the limit (ulimit -n, LimitNOFILE=) or lower maxConnections',
      );
    }
    opts.log.info({ maxConnections: this.limit, openFilesLimit: nofile }, 'connection limit');
    this.schedule();
  }

  get accepting(): boolean {
    return this.socket !== null;
  }

  /**
   * Checks every 100 ms near the limit and 250 ms below half of it, but never spends more than ~1%
   * of a core counting: a count costs about 1 us per open descriptor.
   */
  private schedule(): void {
    if (this.closed) return;
    const near = this.connections >= this.limit * 0.5 || this.socket === null;
    this.timer = setTimeout(() => this.check(), Math.max(near ? 100 : 250, (this.base + this.connections) / 10));
    this.timer.unref();
  }

  private check(): void {
    const fds = openFiles();
    if (fds === 'exhausted') {
      // Not a descriptor left: uWS is failing accept() in a loop. Stop listening now.
      if (this.socket !== null) this.pause(this.limit);
    } else if (fds !== null) {
      this.connections = Math.max(0, fds - this.base);
      if (this.socket !== null && this.connections >= this.limit) this.pause(this.connections);
      else if (this.socket === null && !this.relistening && this.connections <= this.limit * 0.75) this.relisten();
    }
    this.schedule();
  }

  private pause(connections: number): void {
    this.opts.uws.us_listen_socket_close(this.socket!);
    this.socket = null;
    this.connections = connections;
    this.pauses++;
    this.opts.log.warn({ connections, limit: this.limit }, 'connection limit reached: new connections are refused until some close');
  }

  /**
   * Serves new connections from `app` from now on (a TLS reload): closes the listen socket and binds
   * the port again for `app` at once, so the port is closed only for that instant (a connection still
   * in the kernel's accept queue then is reset; established ones stay with the old app). If the new
   * app cannot bind, the old one listens again. Returns whether `app` is now listening.
   */
  swap(app: TemplatedApp): boolean {
    const old = this.opts.app;
    this.opts.app = app;
    if (this.closed || this.socket === null) return true; // paused at the limit: relisten() uses the new app
    this.opts.uws.us_listen_socket_close(this.socket);
    this.socket = null;
    const s = listenNow(app, this.opts.host, this.opts.port, this.opts.shared === true);
    if (s !== false) {
      this.socket = s;
      return true;
    }
    this.opts.app = old;
    const back = listenNow(old, this.opts.host, this.opts.port, this.opts.shared === true);
    if (back !== false) this.socket = back;
    else this.opts.log.error({ port: this.opts.port }, 'cannot listen on the port again after a TLS reload; retrying');
    return false;
  }

  private relisten(): void {
    this.relistening = true;
    listenExclusive(this.opts.uws, this.opts.app, this.opts.host, this.opts.port, this.opts.shared === true).then(
      (s) => {
        this.relistening = false;
        if (this.closed) {
          this.opts.uws.us_listen_socket_close(s);
          return;
        }
        this.socket = s;
        this.opts.log.info({ connections: this.connections }, 'accepting connections again');
      },
      (e: Error) => {
        this.relistening = false;
        this.opts.log.error({ err: e.message }, 'could not listen again after the connection limit; retrying');
      },
    );
  }

  /** Stops accepting for good (shutdown). */
  close(): void {
    this.closed = true;
    if (this.timer !== null) clearTimeout(this.timer);
    if (this.socket !== null) this.opts.uws.us_listen_socket_close(this.socket);
    this.socket = null;
  }
}
