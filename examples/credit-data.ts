// Synthetic credit applications for the demo model, tests and benchmarks: a seeded generator
// (xoshiro128** + Box-Muller) of customers with stable traits, their loan applications with ten
// model features, a default label drawn from a known logistic ground truth, and an optional
// covariate drift. Also the CLI that writes the rows as CSV:
//   node dist/examples/credit-data.js --n 1000 --seed 7 --out file.csv [--drift 1.0]
import { writeFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

/** Model features, in the order every model and CSV uses. */
export const CREDIT_FEATURES = [
  'duration_months',
  'amount',
  'age',
  'income',
  'employment_years',
  'credit_history_months',
  'existing_loans',
  'debt_to_income',
  'txn_count_24h',
  'late_payments_90d',
] as const;
export type CreditFeature = (typeof CREDIT_FEATURES)[number];

export const CREDIT_COLUMNS = ['customer_id', 'application_date', ...CREDIT_FEATURES, 'default'] as const;
export type CreditColumn = (typeof CREDIT_COLUMNS)[number];

export type CreditFeatures = Record<CreditFeature, number>;
export interface CreditApplication extends CreditFeatures {
  customer_id: string;
  application_date: string;
  default: 0 | 1;
}

export interface CreditDataOptions {
  n: number;
  seed: number;
  /** First application date, ISO `YYYY-MM-DD` (default 2024-01-01). */
  start?: string | undefined;
  /** Last application date, inclusive (default 2025-12-31). */
  end?: string | undefined;
  /** Covariate drift: 0 none (default), 1 strong (PSI of score and several features > 0.25). */
  drift?: number;
  /**
   * Concept drift: 0 none (default). Moves the true default risk itself: recent card activity and
   * existing loans weigh more, so a model trained before the change ranks applicants worse.
   */
  concept?: number;
}

export const CUSTOMER_COUNT = 10_000;
const LOAN_TERMS_MONTHS = [6, 12, 18, 24, 30, 36, 48, 60, 72];
const ANNUAL_INTEREST = 0.11;
const MS_PER_DAY = 86_400_000;

/** xoshiro128** seeded through a 32-bit mix of the seed; uniform doubles, normals, integers. */
export class Random {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;
  private spareNormal: number | null = null;

  constructor(seed: number) {
    let state = seed | 0;
    const mix = (): number => {
      state = (state + 0x9e3779b9) | 0;
      let z = state;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.s0 = mix();
    this.s1 = mix();
    this.s2 = mix();
    this.s3 = mix();
  }

  /** Next 32-bit unsigned integer. */
  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9) >>> 0;
    const t = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** Uniform in [0, 1). */
  uniform(): number {
    return this.nextUint32() / 4294967296;
  }

  /** Uniform integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.uniform() * (hi - lo + 1));
  }

  /** Standard normal by Box-Muller (the second value of each pair is kept for the next call). */
  normal(): number {
    if (this.spareNormal !== null) {
      const z = this.spareNormal;
      this.spareNormal = null;
      return z;
    }
    const u = 1 - this.uniform(); // (0, 1]: log(u) is finite
    const v = this.uniform();
    const radius = Math.sqrt(-2 * Math.log(u));
    this.spareNormal = radius * Math.sin(2 * Math.PI * v);
    return radius * Math.cos(2 * Math.PI * v);
  }

  /** Poisson by Knuth's multiplication method (fine for the small means used here). */
  poisson(mean: number): number {
    const limit = Math.exp(-mean);
    let k = 0;
    for (let product = this.uniform(); product > limit; product *= this.uniform()) k++;
    return k;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

const clip = (x: number, lo: number, hi: number): number => Math.min(hi, Math.max(lo, x));
const roundTo = (x: number, step: number): number => Math.round(x / step) * step;
/** Rounds to `digits` decimals so the value prints plainly (no 0.30000000000000004). */
const roundDecimals = (x: number, digits: number): number => Number(x.toFixed(digits));

/** Traits that stay the same for a customer across applications (drawn from seed and customer index). */
export interface CustomerTraits {
  ageAtStart: number;
  employmentShare: number;
  historyShare: number;
  incomeZ: number;
  baseLoans: number;
  paymentPerLoan: number;
  txnRate: number;
  /** Unobserved riskiness: drives late payments and default, keeps the AUC realistic. */
  risk: number;
}

export function customerTraits(seed: number, index: number): CustomerTraits {
  const rng = new Random(Math.imul(seed ^ 0x5bd1e995, 0x27d4eb2d) ^ (index + 1));
  return {
    ageAtStart: clip(41 + 12 * rng.normal(), 18, 78),
    employmentShare: 0.15 + 0.8 * rng.uniform(),
    historyShare: 0.25 + 0.75 * rng.uniform(),
    incomeZ: rng.normal(),
    baseLoans: Math.min(5, rng.poisson(1.0)),
    paymentPerLoan: 300 * Math.exp(0.5 * rng.normal()),
    txnRate: 2.5 * Math.exp(0.6 * rng.normal()),
    risk: rng.normal(),
  };
}

/** Ground-truth log-odds of default for a feature vector and the customer's latent risk. */
export function trueDefaultLogit(f: CreditFeatures, latentRisk = 0, concept = 0): number {
  return (
    -2.65 +
    concept * (0.12 * (f.txn_count_24h - 4) + 0.5 * (f.existing_loans - 1)) +
    2.0 * f.debt_to_income -
    1.0 * Math.log(f.income / 45_000) +
    0.5 * f.late_payments_90d -
    0.02 * (f.age - 40) -
    0.025 * (f.credit_history_months / 12) -
    0.03 * f.employment_years +
    0.2 * f.existing_loans +
    0.012 * (f.duration_months - 30) +
    0.03 * f.txn_count_24h +
    0.55 * latentRisk
  );
}

function monthlyInstalment(amount: number, months: number): number {
  const r = ANNUAL_INTEREST / 12;
  return (amount * r) / (1 - (1 + r) ** -months);
}

function parseIsoDate(value: string, what: string): number {
  const ms = /^\d{4}-\d{2}-\d{2}$/.test(value) ? Date.parse(`${value}T00:00:00Z`) : NaN;
  if (Number.isNaN(ms) || new Date(ms).toISOString().slice(0, 10) !== value)
    throw new RangeError(`${what} must be an ISO date YYYY-MM-DD, got ${JSON.stringify(value)}`);
  return ms;
}

/** Generates `n` applications sorted by date (ties keep generation order). Deterministic per options. */
export function generateCreditData(options: CreditDataOptions): CreditApplication[] {
  const { n, seed } = options;
  const drift = options.drift ?? 0;
  const concept = options.concept ?? 0;
  if (!Number.isFinite(concept)) throw new RangeError(`concept must be a finite number, got ${concept}`);
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`n must be a non-negative integer, got ${n}`);
  if (!Number.isSafeInteger(seed)) throw new RangeError(`seed must be an integer, got ${seed}`);
  if (!(Number.isFinite(drift) && drift >= 0)) throw new RangeError(`drift must be a number >= 0, got ${drift}`);
  const startMs = parseIsoDate(options.start ?? '2024-01-01', 'start');
  const endMs = parseIsoDate(options.end ?? '2025-12-31', 'end');
  if (endMs < startMs) throw new RangeError(`end ${options.end} is before start ${options.start}`);
  const days = (endMs - startMs) / MS_PER_DAY + 1;

  const rng = new Random(seed);
  const traits = new Map<number, CustomerTraits>();
  const rows: CreditApplication[] = [];
  for (let i = 0; i < n; i++) {
    const customer = rng.int(0, CUSTOMER_COUNT - 1);
    let c = traits.get(customer);
    if (c === undefined) {
      c = customerTraits(seed, customer);
      traits.set(customer, c);
    }
    const day = rng.int(0, days - 1);
    const yearsSinceStart = day / 365.25;

    const age = clip(Math.floor(c.ageAtStart + yearsSinceStart), 18, 80);
    const employmentYears = clip(roundDecimals((age - 18) * c.employmentShare, 1), 0, 40);
    const creditHistoryMonths = clip(Math.round((age - 18) * 12 * c.historyShare), 0, 480);
    const logIncome = Math.log(34_000) + 0.45 * c.incomeZ + 0.012 * Math.min(employmentYears, 25) + 0.006 * (age - 18) - 0.45 * drift;
    const income = clip(roundTo(Math.exp(logIncome), 100), 12_000, 250_000);
    const existingLoans = clip(c.baseLoans + (rng.uniform() < 0.15 + 0.35 * drift ? 1 : 0), 0, 6);
    const logAmount = Math.log(7_000) + 0.35 * Math.log(income / 45_000) + 0.7 * rng.normal() + 0.6 * drift;
    const amount = clip(roundTo(Math.exp(logAmount), 50), 500, 50_000);
    // Bigger loans run longer: the term index follows the amount's position on a log scale.
    const amountPosition = (Math.log(amount) - Math.log(500)) / (Math.log(50_000) - Math.log(500));
    const termIndex = clip(Math.round(amountPosition * 8 + 1.2 * rng.normal()), 0, LOAN_TERMS_MONTHS.length - 1);
    const durationMonths = LOAN_TERMS_MONTHS[termIndex]!; // clipped to the table's indexes above
    const monthlyDebt = existingLoans * c.paymentPerLoan + monthlyInstalment(amount, durationMonths);
    const debtToIncome = clip(roundDecimals(monthlyDebt / (income / 12), 4), 0, 3);
    const txnCount = clip(rng.poisson(c.txnRate), 0, 40);
    const latePayments = clip(rng.poisson(0.2 * Math.exp(0.8 * c.risk) * (1 + 2.5 * drift)), 0, 6);

    const features: CreditFeatures = {
      duration_months: durationMonths,
      amount,
      age,
      income,
      employment_years: employmentYears,
      credit_history_months: creditHistoryMonths,
      existing_loans: existingLoans,
      debt_to_income: debtToIncome,
      txn_count_24h: txnCount,
      late_payments_90d: latePayments,
    };
    const pDefault = 1 / (1 + Math.exp(-trueDefaultLogit(features, c.risk, concept)));
    rows.push({
      customer_id: `C${String(customer).padStart(5, '0')}`,
      application_date: new Date(startMs + day * MS_PER_DAY).toISOString().slice(0, 10),
      ...features,
      default: rng.uniform() < pDefault ? 1 : 0,
    });
  }
  // Stable sort: applications arrive in date order, as a real application log would.
  return rows.sort((a, b) => (a.application_date < b.application_date ? -1 : a.application_date > b.application_date ? 1 : 0));
}

/** A customer's offline (batch) features as of a date: what a nightly job would materialize. */
export interface CustomerSnapshot {
  customer_id: string;
  as_of: string;
  age: number;
  income: number;
  employment_years: number;
  credit_history_months: number;
  existing_loans: number;
  /** Monthly payments on existing loans (the new loan's instalment is added at request time). */
  existing_monthly_debt: number;
  late_payments_90d: number;
}

export const SNAPSHOT_COLUMNS = [
  'customer_id',
  'as_of',
  'age',
  'income',
  'employment_years',
  'credit_history_months',
  'existing_loans',
  'existing_monthly_debt',
  'late_payments_90d',
] as const;

/**
 * The snapshot of every customer (`C00000`..`C09999`) as of `asOf`, computed from the same traits
 * as the applications, so features served from it match what the demo model was trained on.
 */
export function generateCustomerSnapshots(seed: number, asOf = '2025-12-31', start = '2024-01-01'): CustomerSnapshot[] {
  const asOfMs = parseIsoDate(asOf, 'asOf');
  const years = (asOfMs - parseIsoDate(start, 'start')) / MS_PER_DAY / 365.25;
  const out: CustomerSnapshot[] = [];
  for (let i = 0; i < CUSTOMER_COUNT; i++) {
    const c = customerTraits(seed, i);
    const rng = new Random(Math.imul(seed ^ 0x1b873593, 0x68e31da4) ^ (i + 1));
    const age = clip(Math.floor(c.ageAtStart + years), 18, 80);
    const employmentYears = clip(roundDecimals((age - 18) * c.employmentShare, 1), 0, 40);
    const creditHistoryMonths = clip(Math.round((age - 18) * 12 * c.historyShare), 0, 480);
    const logIncome = Math.log(34_000) + 0.45 * c.incomeZ + 0.012 * Math.min(employmentYears, 25) + 0.006 * (age - 18);
    out.push({
      customer_id: `C${String(i).padStart(5, '0')}`,
      as_of: asOf,
      age,
      income: clip(roundTo(Math.exp(logIncome), 100), 12_000, 250_000),
      employment_years: employmentYears,
      credit_history_months: creditHistoryMonths,
      existing_loans: c.baseLoans,
      existing_monthly_debt: roundDecimals(c.baseLoans * c.paymentPerLoan, 2),
      late_payments_90d: clip(rng.poisson(0.2 * Math.exp(0.8 * c.risk)), 0, 6),
    });
  }
  return out;
}

/** The feature values of a row, in CREDIT_FEATURES order. */
export function featureVector(row: CreditFeatures): number[] {
  return CREDIT_FEATURES.map((f) => row[f]);
}

/** CSV text (header + one line per row, trailing newline) of the chosen columns. */
export function toCsv(rows: readonly CreditApplication[], columns: readonly CreditColumn[] = CREDIT_COLUMNS): string {
  const lines = [columns.join(',')];
  for (const row of rows) lines.push(columns.map((c) => String(row[c])).join(','));
  return `${lines.join('\n')}\n`;
}

interface CliArgs {
  n: number;
  seed: number;
  out?: string | undefined;
  drift: number;
  start?: string | undefined;
  end?: string | undefined;
}

const USAGE =
  'usage: node dist/examples/credit-data.js --n <rows> --seed <int> [--out file.csv] [--drift 0..1] [--start YYYY-MM-DD] [--end YYYY-MM-DD]';

export function parseCliArgs(argv: readonly string[]): CliArgs {
  const values = new Map<string, string>();
  for (let i = 0; i < argv.length; i += 2) {
    const flag = argv[i]!;
    const value = argv[i + 1];
    if (!['--n', '--seed', '--out', '--drift', '--start', '--end'].includes(flag))
      throw new Error(`unknown argument ${JSON.stringify(flag)}\n${USAGE}`);
    if (value === undefined || value.startsWith('--')) throw new Error(`${flag} needs a value\n${USAGE}`);
    values.set(flag, value);
  }
  const integer = (flag: string, fallback?: number): number => {
    const raw = values.get(flag);
    if (raw === undefined && fallback !== undefined) return fallback;
    const value = Number(raw);
    if (raw === undefined || !Number.isSafeInteger(value))
      throw new Error(`${flag} must be an integer, got ${JSON.stringify(raw ?? null)}\n${USAGE}`);
    return value;
  };
  const drift = Number(values.get('--drift') ?? '0');
  if (!(Number.isFinite(drift) && drift >= 0))
    throw new Error(`--drift must be a number >= 0, got ${JSON.stringify(values.get('--drift'))}`);
  return {
    n: integer('--n'),
    seed: integer('--seed', 7),
    drift,
    out: values.get('--out'),
    start: values.get('--start'),
    end: values.get('--end'),
  };
}

function main(argv: readonly string[]): void {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(USAGE);
    return;
  }
  const args = parseCliArgs(argv);
  const csv = toCsv(generateCreditData(args));
  if (args.out === undefined) process.stdout.write(csv);
  else {
    writeFileSync(args.out, csv);
    console.error(`wrote ${args.n} rows to ${args.out}`);
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  try {
    main(process.argv.slice(2));
  } catch (error) {
    console.error((error as Error).message);
    process.exitCode = 2;
  }
}
