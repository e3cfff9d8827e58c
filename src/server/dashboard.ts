// GET /dashboard: the live monitoring page (src/server/dashboard.html, one self-contained document
// that reads the /v1/monitoring JSON API). The file is read once, when the route is registered,
// and served from memory with `cache-control: no-store` and a Content-Security-Policy that names
// the page's one inline <script> and one inline <style> by their sha256, so nothing else can run
// on the page even if an API string ever slipped into markup.

import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { ResponseState } from './http.js';
import type { HttpResponse, TemplatedApp } from './uws.js';

type Res = HttpResponse & ResponseState;

// tsc does not copy .html into dist/: next to this file covers running from src/ (or a build that
// copies it); the source tree covers dist/src/server/, which is how scoreline runs (the Docker image
// keeps src/ as well).
const CANDIDATES = [new URL('./dashboard.html', import.meta.url), new URL('../../../src/server/dashboard.html', import.meta.url)];

export interface DashboardPage {
  readonly body: Buffer;
  readonly headers: Readonly<Record<string, string>>;
}

/** The page and its response headers; throws when the HTML is missing or not in the expected shape. */
export function loadDashboard(): DashboardPage {
  const file = CANDIDATES.find((u) => existsSync(u));
  if (file === undefined) {
    throw new Error(`the dashboard page is missing: looked for ${CANDIDATES.map((u) => fileURLToPath(u)).join(' and ')}`);
  }
  const html = readFileSync(file, 'utf8');
  return { body: Buffer.from(html, 'utf8'), headers: dashboardHeaders(html) };
}

/** Response headers for the page, the CSP pinned to the hashes of its inline script and style. */
export function dashboardHeaders(html: string): Record<string, string> {
  const csp = [
    "default-src 'none'",
    `script-src ${inlineHash(html, 'script')}`,
    `style-src ${inlineHash(html, 'style')}`,
    "connect-src 'self'",
    // the favicon is an empty data: URL, so the browser asks the server for nothing but the API
    'img-src data:',
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; ');
  return {
    'content-type': 'text/html; charset=utf-8',
    'cache-control': 'no-store',
    'content-security-policy': csp,
    'x-content-type-options': 'nosniff',
    'referrer-policy': 'no-referrer',
  };
}

function inlineHash(html: string, tag: 'script' | 'style'): string {
  const markup = html.replace(/<!--[\s\S]*?-->/g, '');
  const opened = markup.match(new RegExp(`<${tag}[\\s>]`, 'g')) ?? [];
  const block = new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`).exec(markup);
  if (opened.length !== 1 || block === null) {
    throw new Error(`the dashboard page must have exactly one plain <${tag}> element (its CSP hash covers one)`);
  }
  return `'sha256-${createHash('sha256').update(block[1]!, 'utf8').digest('base64')}'`;
}

export function registerDashboard(app: TemplatedApp): void {
  const page = loadDashboard();
  // GET only: a HEAD handler answering with endWithoutBody made uWS v20.30 abort the process
  // ("returning from a request handler without responding"), so HEAD falls through to the 404.
  app.get('/dashboard', (res: Res) => {
    if (res.aborted || res.answered) return;
    res.answered = true;
    res.cork(() => {
      for (const k in page.headers) res.writeHeader(k, page.headers[k]!);
      if (res.requestId !== undefined) res.writeHeader('x-request-id', res.requestId);
      res.end(page.body);
    });
    res.exchange?.end(200, res);
  });
}
