#!/usr/bin/env node
// `npm run clean`: removes the TypeScript build (dist/), so a deleted source or test file cannot
// keep running from a stale compiled copy. The native addon (build/) is left alone.

import { rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

rmSync(fileURLToPath(new URL('../dist', import.meta.url)), { recursive: true, force: true });
