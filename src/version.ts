// The package's name and version, read once from package.json (two levels above dist/src).

import { readFileSync } from 'node:fs';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { name: string; version: string };

export default pkg;
