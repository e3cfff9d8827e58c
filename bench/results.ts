// Writes a benchmark's table into bench/RESULTS.md between its own markers, with the command that
// produced it and the machine it ran on, so every number there can be reproduced by one command.

import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, totalmem } from 'node:os';
import { fileURLToPath } from 'node:url';

const FILE = fileURLToPath(new URL('../../bench/RESULTS.md', import.meta.url));

export function machine(): string {
  const cpu = cpus()[0]?.model.trim() ?? 'unknown CPU';
  return `${availableParallelism()} cores (${cpu}), ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}, ${process.platform}/${process.arch}`;
}

export function writeSection(name: string, title: string, command: string, body: string): void {
  const start = `<!-- bench:${name}:start -->`;
  const end = `<!-- bench:${name}:end -->`;
  const section = `${start}\n## ${title}\n\nCommand: \`${command}\`  \nMeasured: ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC on ${machine()}\n\n${body.trim()}\n${end}`;
  let text = existsSync(FILE)
    ? readFileSync(FILE, 'utf8')
    : '# Benchmark results\n\nEvery table below is written by the command named with it.\n';
  const i = text.indexOf(start);
  const j = text.indexOf(end);
  text = i >= 0 && j > i ? text.slice(0, i) + section + text.slice(j + end.length) : `${text.trimEnd()}\n\n${section}\n`;
  writeFileSync(FILE, text);
}

export function table(header: string[], rows: (string | number)[][]): string {
  const line = (cells: (string | number)[]) => `| ${cells.join(' | ')} |`;
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n');
}

/** Replaces the README block between `<!-- readme:NAME:start -->` and its end marker, if present. */
export function writeReadmeBlock(name: string, body: string): void {
  const file = fileURLToPath(new URL('../../README.md', import.meta.url));
  if (!existsSync(file)) return;
  const start = `<!-- readme:${name}:start -->`;
  const end = `<!-- readme:${name}:end -->`;
  const text = readFileSync(file, 'utf8');
  const i = text.indexOf(start);
  const j = text.indexOf(end);
  if (i < 0 || j < i) return;
  writeFileSync(file, `${text.slice(0, i + start.length)}\n${body.trim()}\n${text.slice(j)}`);
}
