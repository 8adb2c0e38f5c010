-- Channels (issue 12): each configured channel's health as the agent's
-- /health last reported it, and the installation-wide uniqueness of bot
-- tokens. Append-only.

-- JSON object {"telegram": {"status": "ok|starting|error", "lastError": …,
-- "restartCount": n}, …} from the stats poll; NULL until first polled.
ALTER TABLE agents ADD COLUMN channel_health TEXT;

-- One row per channel token in use: a keyed hash (HMAC-SHA256 under a key
-- derived from the master key, hex), never the token. The primary key makes
-- one token serve one agent across the installation; `field` names the API
-- field it came from (e.g. `channels.telegram.botToken`).
CREATE TABLE channel_tokens (
    token_hash TEXT PRIMARY KEY NOT NULL,
    agent_id   TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    field      TEXT NOT NULL
);
CREATE INDEX channel_tokens_agent ON channel_tokens (agent_id);
