-- Channels (issue 12): see migrations/sqlite/0004_channels.sql.

ALTER TABLE agents ADD COLUMN channel_health TEXT;

CREATE TABLE channel_tokens (
    token_hash TEXT PRIMARY KEY NOT NULL,
    agent_id   TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    field      TEXT NOT NULL
);
CREATE INDEX channel_tokens_agent ON channel_tokens (agent_id);
