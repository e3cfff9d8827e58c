// Writes examples/features/customers.csv: the offline (batch) features of the demo customers
// C00000..C09999, from the same seeded traits as the demo model's training data, so what the
// feature server serves matches what the model learned. Deterministic. Run by `npm run demo:model`.
import { writeFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { DEMO_SEED } from './build-demo-model.js';
import { generateCustomerSnapshots, SNAPSHOT_COLUMNS } from './credit-data.js';

/** The CSV, without the as_of column: event times come from the file (a nightly job's output). */
export function customersCsv(): string {
  const columns = SNAPSHOT_COLUMNS.filter((c) => c !== 'as_of');
  const lines = [columns.join(',')];
  for (const s of generateCustomerSnapshots(DEMO_SEED)) lines.push(columns.map((c) => String(s[c])).join(','));
  return `${lines.join('\n')}\n`;
}

async function main(): Promise<void> {
  const out = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'examples', 'features', 'customers.csv');
  await writeFile(out, customersCsv());
  console.log(`wrote ${out}`);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
