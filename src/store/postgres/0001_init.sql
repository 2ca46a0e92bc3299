-- hookway Postgres schema, version 1. Times are nanoseconds since the Unix
-- epoch (UTC) in BIGINT. Rows keep the full value as JSON text in
-- `data`/`record`; the other columns are what queries filter and sort on.

CREATE TABLE hookway_endpoints (
    id TEXT PRIMARY KEY,
    -- The endpoint's EndpointRecord as JSON: holds its secrets.
    record TEXT NOT NULL,
    enabled BOOLEAN NOT NULL,
    -- The endpoint list's version (below) when this row was last written,
    -- so processes know when to rebuild a cached copy.
    revision BIGINT NOT NULL
);

-- The endpoint list's version: one row, bumped by every endpoint write in
-- the same statement. Processes serve their publishes' fan-out from a cached
-- list and insert an event only if the version it was read at is current.
CREATE TABLE hookway_endpoint_version (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    version BIGINT NOT NULL
);
INSERT INTO hookway_endpoint_version (version) VALUES (0);

CREATE TABLE hookway_events (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    channels TEXT NOT NULL,
    payload BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX hookway_events_created ON hookway_events (created_at, seq);
-- Payloads over about 2 KB are compressed as they are stored and
-- decompressed for every attempt: with lz4 where the server has it, which
-- costs a fraction of the CPU of the default (pglz).
DO $$
BEGIN
    ALTER TABLE hookway_events ALTER COLUMN payload SET COMPRESSION lz4;
EXCEPTION WHEN OTHERS THEN
    NULL;
END
$$;

CREATE TABLE hookway_deliveries (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    event_seq BIGINT NOT NULL REFERENCES hookway_events (seq),
    endpoint_id TEXT NOT NULL,
    state TEXT NOT NULL,
    -- When it may next be claimed (pending: due; in flight: lease end);
    -- NULL when it is not claimable (delivered, failed, held).
    due_at BIGINT,
    claims BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    finished_at BIGINT,
    data TEXT NOT NULL
);
-- Claiming and next_due: only claimable rows are indexed, so the cost of
-- finding the next due deliveries does not grow with finished ones.
CREATE INDEX hookway_deliveries_due ON hookway_deliveries (due_at, id)
    WHERE due_at IS NOT NULL;
-- Listing by endpoint, held counts and ordered queue heads.
CREATE INDEX hookway_deliveries_endpoint ON hookway_deliveries (endpoint_id, state, seq);
-- Pruning finished deliveries.
CREATE INDEX hookway_deliveries_finished ON hookway_deliveries (state, finished_at)
    WHERE finished_at IS NOT NULL;
CREATE INDEX hookway_deliveries_event ON hookway_deliveries (event_seq);

CREATE TABLE hookway_attempts (
    delivery_seq BIGINT NOT NULL REFERENCES hookway_deliveries (seq),
    ordinal INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (delivery_seq, ordinal)
);
