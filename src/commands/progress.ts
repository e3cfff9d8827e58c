// Progress for long CLI work on stderr: a redrawn bar on a terminal, a line every few seconds
// otherwise (CI logs), and nothing with --quiet.

export interface Progress {
  update(done: number, total: number, detail?: string): void;
  done(message: string): void;
}

export function progressBar(label: string, opts: { quiet?: boolean; stream?: NodeJS.WriteStream } = {}): Progress {
  const out = opts.stream ?? process.stderr;
  const tty = out.isTTY === true;
  const t0 = performance.now();
  let last = 0;
  return {
    update(done, total, detail = '') {
      if (opts.quiet) return;
      const now = performance.now();
      if (now - last < (tty ? 100 : 3000) && done < total) return;
      last = now;
      const frac = total > 0 ? Math.min(1, done / total) : 0;
      const rate = done / Math.max((now - t0) / 1000, 1e-3);
      const text = `${label} ${(frac * 100).toFixed(0).padStart(3)}% ${detail} ${Math.round(rate).toLocaleString('en-US')}/s`;
      if (tty) {
        const width = 30;
        const filled = Math.round(frac * width);
        out.write(`\r[${'#'.repeat(filled)}${' '.repeat(width - filled)}] ${text}\u001b[K`);
      } else {
        out.write(`${text}\n`);
      }
    },
    done(message) {
      if (opts.quiet) return;
      if (message === '') {
        if (tty) out.write('\r\u001b[K');
        return;
      }
      out.write(`${tty ? '\r\u001b[K' : ''}${message}\n`);
    },
  };
}
