-- hookway SQLite schema, version 1. Times are nanoseconds since the Unix
-- epoch (UTC). Rows keep the full value as JSON in `data`/`record`; the
-- other columns are what queries filter and sort on.

CREATE TABLE hookway_endpoints (
    id TEXT PRIMARY KEY NOT NULL,
    -- The endpoint's EndpointRecord as JSON: holds its secrets.
    record TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    -- Bumped on every write, so readers know when to rebuild a cached copy.
    revision INTEGER NOT NULL
);

CREATE TABLE hookway_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    channels TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX hookway_events_created ON hookway_events (created_at, seq);

CREATE TABLE hookway_deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    event_seq INTEGER NOT NULL REFERENCES hookway_events (seq),
    endpoint_id TEXT NOT NULL,
    state TEXT NOT NULL,
    -- When it may next be claimed (pending: due; in flight: lease end);
    -- NULL when it is not claimable (delivered, failed, held).
    due_at INTEGER,
    claims INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    finished_at INTEGER,
    data TEXT NOT NULL
);
-- Claiming and next_due: only claimable rows are indexed.
CREATE INDEX hookway_deliveries_due ON hookway_deliveries (due_at, id)
    WHERE due_at IS NOT NULL;
-- Listing by endpoint, held counts and ordered queue heads.
CREATE INDEX hookway_deliveries_endpoint ON hookway_deliveries (endpoint_id, state, seq);
-- Pruning finished deliveries.
CREATE INDEX hookway_deliveries_finished ON hookway_deliveries (state, finished_at)
    WHERE finished_at IS NOT NULL;
CREATE INDEX hookway_deliveries_event ON hookway_deliveries (event_seq);

CREATE TABLE hookway_attempts (
    delivery_seq INTEGER NOT NULL REFERENCES hookway_deliveries (seq),
    ordinal INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (delivery_seq, ordinal)
) WITHOUT ROWID;
