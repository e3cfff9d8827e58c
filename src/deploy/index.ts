// Deployment: strategies as data (direct, blue-green, canary, A/B, shadow), the router that picks a
// version per request, the deployer that validates, switches, persists, analyses and rolls back,
// and the container bundle writer.

export { Deployer, type Applied, type DeploymentState, type DeployerOptions, type DeploymentChange } from './deployer.js';
export { Router, type Target } from './router.js';
export { parseStrategy, primaryVersion, route, versionsOf, stickyFraction, type Strategy, type RouteDecision } from './strategies.js';
export { analyzeCanary, Agreement, StepStats, DEFAULT_POLICY, samplePsi, type Analysis, type AnalysisPolicy } from './analysis.js';
export { bundleImageTag, writeBundle } from './bundle.js';
export { traffic as trafficOf } from './checks.js';
