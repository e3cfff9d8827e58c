// Version 1 of the PostgreSQL schema: the registry (models, versions, content-addressed artifacts,
// aliases and their history, deployments and their history), retraining jobs with their triggers
// and incidents, alerts with their events, and the cluster (replicas, the leader lease, shared
// secrets). Timestamps of records are ISO 8601 text from the writer's clock, as in SQLite; the
// cluster's are the database's own clock, so replicas' clocks never decide who leads. JSON columns
// are `json`, not `jsonb`, so a record reads back with its keys in the order it was written.

export default `
CREATE TABLE artifacts (
  sha256     text        PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
  size       bigint      NOT NULL CHECK (size >= 0),
  bytes      bytea       NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
-- Uncompressed out of line: models barely compress, and a slice of the value is read without the rest.
ALTER TABLE artifacts ALTER COLUMN bytes SET STORAGE EXTERNAL;

CREATE TABLE models (
  name        text PRIMARY KEY,
  description text NOT NULL DEFAULT '',
  created_at  text NOT NULL
);

CREATE TABLE versions (
  model          text    NOT NULL REFERENCES models(name),
  version        integer NOT NULL CHECK (version > 0),
  sha256         text    NOT NULL REFERENCES artifacts(sha256),
  size           bigint  NOT NULL CHECK (size >= 0),
  created_at     text    NOT NULL,
  signature      json    NOT NULL,
  metrics        json    NOT NULL,
  tags           json    NOT NULL,
  lineage        json    NOT NULL,
  config         json    NOT NULL,
  reference      json,
  reference_data text    REFERENCES artifacts(sha256),
  revision       integer NOT NULL DEFAULT 1,
  PRIMARY KEY (model, version),
  UNIQUE (model, sha256)
);

CREATE TABLE aliases (
  model      text    NOT NULL,
  alias      text    NOT NULL,
  version    integer NOT NULL,
  updated_at text    NOT NULL,
  PRIMARY KEY (model, alias),
  FOREIGN KEY (model, version) REFERENCES versions(model, version)
);

CREATE TABLE alias_history (
  id           bigserial PRIMARY KEY,
  model        text    NOT NULL REFERENCES models(name),
  alias        text    NOT NULL,
  from_version integer,
  to_version   integer,
  at           text    NOT NULL,
  reason       text    NOT NULL DEFAULT '',
  actor        text    NOT NULL DEFAULT ''
);
CREATE INDEX alias_history_by_alias ON alias_history (model, alias, id);

CREATE TABLE deployments (
  model      text    PRIMARY KEY REFERENCES models(name),
  state      json    NOT NULL,
  updated_at text    NOT NULL,
  revision   integer NOT NULL
);

CREATE TABLE deployment_history (
  id         bigserial PRIMARY KEY,
  model      text NOT NULL REFERENCES models(name),
  at         text NOT NULL,
  action     text NOT NULL,
  from_state json,
  to_state   json NOT NULL,
  reason     text NOT NULL DEFAULT ''
);
CREATE INDEX deployment_history_by_model ON deployment_history (model, id);

CREATE TABLE jobs (
  id         text    PRIMARY KEY,
  model      text    NOT NULL,
  state      text    NOT NULL,
  created_at text    NOT NULL,
  revision   integer NOT NULL,
  data       json    NOT NULL
);
CREATE INDEX jobs_by_model ON jobs (model, created_at);
-- At most one job per model that is not finished, whichever replica creates it.
CREATE UNIQUE INDEX jobs_one_active_per_model ON jobs (model) WHERE state IN ('queued', 'running', 'validating', 'deploying');

CREATE TABLE trigger_events (
  seq   bigserial PRIMARY KEY,
  model text NOT NULL,
  at    text NOT NULL,
  data  json NOT NULL
);
CREATE INDEX trigger_events_by_model ON trigger_events (model, seq);

CREATE TABLE incidents (
  id    text PRIMARY KEY,
  model text NOT NULL,
  at    text NOT NULL,
  data  json NOT NULL
);
CREATE INDEX incidents_by_at ON incidents (at);

CREATE TABLE alerts (
  id         text   PRIMARY KEY,
  state      text   NOT NULL,
  updated_at bigint NOT NULL,
  data       json   NOT NULL
);
CREATE INDEX alerts_by_update ON alerts (updated_at);

CREATE TABLE alert_events (
  seq      bigserial PRIMARY KEY,
  alert_id text   NOT NULL,
  state    text   NOT NULL,
  at       bigint NOT NULL,
  data     json   NOT NULL
);

CREATE TABLE replicas (
  id           text        PRIMARY KEY,
  address      text        NOT NULL,
  host         text        NOT NULL,
  pid          integer     NOT NULL,
  started_at   text        NOT NULL,
  heartbeat_at timestamptz NOT NULL,
  deployments  json        NOT NULL
);

CREATE TABLE leader (
  id          integer     PRIMARY KEY CHECK (id = 1),
  holder      text,
  term        bigint      NOT NULL,
  acquired_at timestamptz NOT NULL,
  expires_at  timestamptz NOT NULL
);

CREATE TABLE secrets (
  name  text PRIMARY KEY,
  value text NOT NULL
);
`;
