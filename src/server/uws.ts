// Loads the native uWebSockets.js binary shipped in @trufflesuite/uws-js-unofficial (uWS.js v20.30)
// directly. The package's own entry point silently falls back to a slow pure-JS emulation when the
// binary cannot load; scoreline never does that: it fails with a clear message instead.

import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type * as UWS from '@trufflesuite/uws-js-unofficial';

export type { HttpRequest, HttpResponse, TemplatedApp, WebSocket, us_listen_socket } from '@trufflesuite/uws-js-unofficial';
export type Uws = typeof UWS;

const require = createRequire(import.meta.url);

export function loadUws(): Uws {
  const binary = `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`;
  let pkgDir: string;
  try {
    pkgDir = dirname(require.resolve('@trufflesuite/uws-js-unofficial/package.json'));
  } catch {
    throw new Error('uWebSockets.js is not installed: run `npm ci` in the scoreline directory');
  }
  const path = join(pkgDir, 'binaries', binary);
  try {
    return require(path) as Uws;
  } catch (err) {
    const reason = err instanceof Error ? err.message.split('\n')[0] : String(err);
    const major = Number(process.versions.node.split('.')[0]);
    const newer =
      major > 20
        ? ` Node.js ${process.versions.node} is newer than this build supports: run scoreline on Node.js 20, or replace the dependency with ` +
          'uWebSockets.js v20.52.0 or later from GitHub (`npm install uNetworking/uWebSockets.js#v20.52.0`; Node 22 and 24; its Linux ' +
          'binaries need glibc 2.35 or newer, v20.55 glibc 2.38), which is not published on the npm registry.'
        : '';
    throw new Error(
      `uWebSockets.js has no working native binary for this platform (${binary}: ${reason}). ` +
        'scoreline uses @trufflesuite/uws-js-unofficial 20.30, whose binaries exist for Node.js 16, 18 and 20 on Linux, macOS or Windows ' +
        `(x64/arm64, glibc: not Alpine/musl); it does not fall back to the slow JS emulation.${newer}`,
    );
  }
}
