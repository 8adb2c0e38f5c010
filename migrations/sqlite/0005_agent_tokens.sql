-- Agent URLs users can use (issue 13): bearer tokens an owner issues for
-- the agent's public URL. Only the SHA-256 (hex) of a token is kept, the
-- very form the agent's `[gateway] paired_tokens` takes; the token itself
-- is shown once, in the answer that issues it. Append-only.
CREATE TABLE agent_tokens (
    id         TEXT PRIMARY KEY NOT NULL,
    agent_id   TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    token_hash TEXT NOT NULL,
    last_four  TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (agent_id, name)
);
