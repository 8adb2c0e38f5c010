-- Agent URLs users can use (issue 13): see
-- migrations/sqlite/0005_agent_tokens.sql.
CREATE TABLE agent_tokens (
    id         TEXT PRIMARY KEY NOT NULL,
    agent_id   TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    token_hash TEXT NOT NULL,
    last_four  TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    CONSTRAINT agent_tokens_agent_name UNIQUE (agent_id, name)
);
