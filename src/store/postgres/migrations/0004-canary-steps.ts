// Version 4 of the PostgreSQL schema: each replica's statistics of the current step of every canary
// deployment it serves (requests, errors, HDR latency histograms, score bins per version, as JSON
// text parsed by the replicas, never by queries), so that the leader judges the canary on the
// traffic of every replica. One row per replica process and model, replaced at every share; `step`
// names the step (the stored deployment's revision and start), and rows are only ever read with the
// step they were written for, so a step's statistics never count for another.

export default `
CREATE TABLE canary_steps (
  model      text        NOT NULL,
  replica    text        NOT NULL,
  step       text        NOT NULL,
  data       text        NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (model, replica)
);
CREATE INDEX canary_steps_by_step ON canary_steps (model, step);
`;
