-- Installation identity and configuration generations. Append-only.

-- One row: this installation's id, generated at its first start. Every
-- container, volume and network zcaas creates carries it as the label
-- io.zcaas.installation, and every list, sweep and event filter is scoped to it.
CREATE TABLE installation (
    singleton  INTEGER PRIMARY KEY NOT NULL CHECK (singleton = 1),
    id         TEXT NOT NULL,
    created_at TEXT NOT NULL
);

-- Bumped by every PATCH that changes what is injected into the container
-- (config, persona, secrets); a deploy that finishes on an older generation
-- deploys again instead of reaching RUNNING with a stale config.
ALTER TABLE agents ADD COLUMN config_generation INTEGER NOT NULL DEFAULT 0;
-- The generation the container that reached RUNNING was deployed with.
ALTER TABLE agents ADD COLUMN deployed_generation INTEGER;
