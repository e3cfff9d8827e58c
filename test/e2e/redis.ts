// A real redis-server for tests, on its own port, started and stopped by the test (CI installs the
// Debian package; nothing else is assumed to be running): the throwaway server of
// examples/local-services.ts, also what `npm run demo:cluster` starts.

export { redisAvailable, startRedis } from '../../examples/local-services.js';
export type { LocalRedis as TestRedis } from '../../examples/local-services.js';
