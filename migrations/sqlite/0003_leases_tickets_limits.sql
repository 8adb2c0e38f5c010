-- Shared state that must outlive one process and be seen by every replica:
-- the reconciler's lease, stream tickets and rate-limit windows. Append-only.
-- Instants here are milliseconds since the Unix epoch on the database's clock.

-- Named leases (one today: 'reconciler'). At most one unexpired holder.
CREATE TABLE leases (
    name          TEXT PRIMARY KEY NOT NULL,
    holder        TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL
);

-- One-use SSE tickets: only the SHA-256 of a ticket is kept.
CREATE TABLE stream_tickets (
    digest        BLOB PRIMARY KEY NOT NULL,
    user_id       TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
CREATE INDEX stream_tickets_user ON stream_tickets (user_id);

-- Fixed-window rate-limit counters ('login:<email>', 'register:<address>').
CREATE TABLE rate_limits (
    key          TEXT PRIMARY KEY NOT NULL,
    window_end_ms INTEGER NOT NULL,
    count        INTEGER NOT NULL
);
