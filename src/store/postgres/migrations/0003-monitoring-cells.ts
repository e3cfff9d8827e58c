// Version 3 of the PostgreSQL schema: the monitoring state each replica shares, per model version,
// per minute and per hour: counts, the HDR latency histogram, score and feature bins, as JSON text
// (parsed by the replicas, never by queries). A row is one replica's cell and is replaced while the
// minute or hour is open; a merged view reads the other replicas' rows for a window. `ref` names
// the drift reference the bins were kept under, so bins of different references are never added.

export default `
CREATE TABLE monitoring_cells (
  model      text        NOT NULL,
  version    integer     NOT NULL,
  span       text        NOT NULL CHECK (span IN ('minute', 'hour')),
  start      bigint      NOT NULL,
  replica    text        NOT NULL,
  ref        text        NOT NULL,
  data       text        NOT NULL,
  rps        double precision,
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (model, version, span, start, replica)
);
CREATE INDEX monitoring_cells_by_start ON monitoring_cells (span, start);
`;
