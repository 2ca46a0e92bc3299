-- The receiving side's de-duplication (receive::IdempotencyStore): one row
-- per message id, claimed while its handler runs, done once it succeeded.
-- `at` is when it was claimed, or last seen done (nanoseconds since the
-- Unix epoch).
CREATE TABLE hookway_idempotency (
    id TEXT PRIMARY KEY NOT NULL,
    state TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX hookway_idempotency_at ON hookway_idempotency (state, at);
