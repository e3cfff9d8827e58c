#!/usr/bin/env node
// Entry point of the `scoreline` command; the TypeScript build lives in dist/.
import { main } from '../dist/src/cli.js';

process.exitCode = await main(process.argv.slice(2));
process.exit();
