// Request ids: a random per-process prefix and a counter, unique across replicas and restarts
// without the cost of a UUID per request. Predictions are logged under them; feedback joins on them.

import { randomBytes } from 'node:crypto';

const ID_PREFIX = randomBytes(6).toString('hex');
let idCounter = 0;

export const nextRequestId = (): string => `${ID_PREFIX}-${(++idCounter).toString(36).padStart(6, '0')}`;
