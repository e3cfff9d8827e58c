// Version 2 of the PostgreSQL schema: the prediction log shared by the replicas. Each replica's log
// thread writes its predictions to its own SQLite file first (the request path never waits on the
// network) and ships them here afterwards, in order, with its watermark in `log_shipping` committed
// in the same transaction, so a crash between the two neither loses nor repeats rows. A label sent to
// any replica joins here, and performance windows and retraining read `labels`.
//
// `predictions` is partitioned by UTC day of `ts` (epoch ms): the log thread creates a day's partition
// before its first rows, and retention drops whole partitions instead of deleting rows. Request ids
// are indexed per partition, not unique (a unique index on a partitioned table must include `ts`).
// Inputs are float32 little-endian bytes (`bytea`), as the replicas' own files keep them: rows are
// inserted by unnest() over arrays, which cannot unnest an array of arrays into rows, and a float as
// four bytes is a quarter of its text and needs no parsing on either side.

export default `
CREATE TABLE predictions (
  request_id text             NOT NULL,
  model      text             NOT NULL,
  version    integer          NOT NULL,
  variant    text             NOT NULL,
  task       text,
  ts         bigint           NOT NULL,
  score      double precision,
  features   bytea,
  key_id     text,
  log_id     text             NOT NULL
) PARTITION BY RANGE (ts);
-- The one index: feedback looks predictions up by request id. Windows and retraining read labels,
-- and retention drops partitions, so another index would only cost every shipped row an entry.
CREATE INDEX predictions_by_request ON predictions (request_id);

-- How far each replica's log (its monitoring.db, by the random id kept in it) has been shipped: the
-- id of the last local segment whose rows are in predictions.
CREATE TABLE log_shipping (
  log_id          text        PRIMARY KEY,
  shipped_through bigint      NOT NULL,
  updated_at      timestamptz NOT NULL DEFAULT now()
);

-- A label joined to its prediction: the prediction's score, time and inputs copied in, so windows
-- and retraining read one table with plain indexes. A second label for the same request replaces it.
CREATE TABLE labels (
  request_id  text             PRIMARY KEY,
  model       text             NOT NULL,
  version     integer          NOT NULL,
  variant     text             NOT NULL,
  ts          bigint           NOT NULL,
  score       double precision,
  features    bytea,
  label       double precision NOT NULL,
  labelled_at bigint           NOT NULL
);
CREATE INDEX labels_by_version ON labels (model, version, ts);
CREATE INDEX labels_by_model ON labels (model, ts);
`;
