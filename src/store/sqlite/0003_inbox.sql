-- The receiving side's durable inbox (receive::InboxStore): one row per
-- message id, inserted before the request is acknowledged. The primary key
-- makes the insert the de-duplication too. Times are nanoseconds since the
-- Unix epoch.
CREATE TABLE hookway_inbox (
    id TEXT PRIMARY KEY NOT NULL,
    event_type TEXT NOT NULL,
    -- The request headers kept for the handler, one `name: value` line each,
    -- ended by CRLF (values need not be UTF-8). Emptied once processed.
    headers BLOB NOT NULL,
    -- The verified body, as received. Emptied once processed.
    body BLOB NOT NULL,
    signed_at INTEGER,
    received_at INTEGER NOT NULL,
    -- pending, claimed, done or failed.
    state TEXT NOT NULL,
    -- When it may next be claimed (pending: due; claimed: lease end); NULL
    -- once done or failed.
    due_at INTEGER,
    -- Bumped by every claim: a result is recorded only with the latest.
    claims INTEGER NOT NULL,
    -- Handler runs recorded.
    attempts INTEGER NOT NULL,
    last_error TEXT,
    -- When it was processed or failed.
    finished_at INTEGER
);
-- Claiming and next_due: only claimable rows are indexed.
CREATE INDEX hookway_inbox_due ON hookway_inbox (due_at, id) WHERE due_at IS NOT NULL;
-- The failed list and pruning.
CREATE INDEX hookway_inbox_finished ON hookway_inbox (state, finished_at, id)
    WHERE finished_at IS NOT NULL;
