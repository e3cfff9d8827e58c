// Imported before onnxruntime-node wherever it is loaded: onnxruntime 1.30 starts a telemetry client
// in every process that creates an environment (its first session), which resolves and posts to
// mobile.events.data.microsoft.com about ten seconds later. A scoring server must not call out on
// its own, and the node binding exposes no OrtApi::DisableTelemetryEvents, so the library's own
// switch is set here, before the library is loaded and before any worker thread or child process
// is started (both inherit the process environment; a worker's process.env is only a copy).

process.env.ORT_DISABLE_TELEMETRY = '1';

export {};
