-- zcaas initial schema (SQLite). Append-only: never edit an applied migration.
-- Timestamps are RFC 3339 UTC text; ids are UUID v4 text.

CREATE TABLE users (
    id            TEXT PRIMARY KEY NOT NULL,
    email         TEXT NOT NULL UNIQUE,          -- stored lower-cased
    password_hash TEXT NOT NULL,                 -- argon2id PHC string
    role          TEXT NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
    plan          TEXT NOT NULL DEFAULT 'free' CHECK (plan IN ('free', 'pro', 'enterprise')),
    created_at    TEXT NOT NULL
);

CREATE TABLE agents (
    id                  TEXT PRIMARY KEY NOT NULL,
    user_id             TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    -- identity (seed 003)
    name                TEXT NOT NULL,
    slug                TEXT NOT NULL UNIQUE,
    agent_name          TEXT NOT NULL,
    user_name           TEXT,
    timezone            TEXT NOT NULL DEFAULT 'UTC',
    communication_style TEXT,
    -- docker (observed facts we keep)
    container_id        TEXT,
    container_port      INTEGER UNIQUE CHECK (container_port BETWEEN 40000 AND 50000),
    status              TEXT NOT NULL CHECK (status IN ('PENDING', 'STARTING', 'RUNNING', 'STOPPING', 'STOPPED', 'ERROR')),
    -- llm
    provider            TEXT NOT NULL,
    provider_url        TEXT,
    model               TEXT NOT NULL,
    temperature         REAL NOT NULL,
    -- memory
    memory_backend      TEXT NOT NULL CHECK (memory_backend IN ('sqlite', 'markdown', 'none')),
    auto_save           TEXT NOT NULL CHECK (auto_save IN ('true', 'false')),
    -- secrets: versioned AES-256-GCM strings (see secrets.rs)
    encrypted_token     TEXT,
    encrypted_api_key   TEXT,
    encrypted_channels  TEXT,
    -- routing
    subdomain           TEXT,
    -- metrics (polled)
    memory_mb           REAL,
    cpu_percent         REAL,
    last_health_at      TEXT,
    -- reconciler
    desired_state       TEXT NOT NULL DEFAULT 'running' CHECK (desired_state IN ('running', 'stopped', 'deleted')),
    attempts            INTEGER NOT NULL DEFAULT 0,
    next_attempt_at     TEXT,
    last_error          TEXT,
    spec_hash           TEXT,
    image               TEXT NOT NULL,
    memory_limit_mb     INTEGER NOT NULL,
    nano_cpus           INTEGER NOT NULL,
    ever_running        INTEGER NOT NULL DEFAULT 0,
    -- State.StartedAt of the container start the stored token was paired for:
    -- a later start means the agent must be re-paired.
    paired_started_at   TEXT,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL
);
CREATE INDEX agents_user_id ON agents (user_id);
CREATE INDEX agents_status ON agents (status);

-- Every status transition, kept after the agent is deleted (no foreign key).
CREATE TABLE agent_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id    TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    slug        TEXT NOT NULL,
    from_status TEXT,
    to_status   TEXT NOT NULL,
    reason      TEXT NOT NULL,
    at          TEXT NOT NULL
);
CREATE INDEX agent_events_agent ON agent_events (agent_id, id);
