-- zcaas schema (PostgreSQL): the three SQLite migrations (sqlite/0001..0003)
-- in one. Append-only: never edit an applied migration.
--
-- Types are chosen so the Rust row types decode unchanged on both backends:
-- ids, strings and statuses are TEXT (the status, desired-state, role and
-- plan enums are TEXT on the Rust side); every i64 is BIGINT, every f64
-- DOUBLE PRECISION; instants are TIMESTAMPTZ (microseconds); `ever_running`
-- is BOOLEAN; `auto_save` stays the TEXT 'true'/'false' of seed 003.
--
-- Leases, tickets and rate-limit windows are timed by the database's clock
-- (`clock_timestamp()`), never a replica's: their expiries are TIMESTAMPTZ
-- here where SQLite keeps milliseconds since the Unix epoch.

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL,                 -- stored lower-cased
    password_hash TEXT NOT NULL,                 -- argon2id PHC string
    role          TEXT NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
    plan          TEXT NOT NULL DEFAULT 'free' CHECK (plan IN ('free', 'pro', 'enterprise')),
    created_at    TIMESTAMPTZ NOT NULL,
    CONSTRAINT users_email_key UNIQUE (email)
);

CREATE TABLE agents (
    id                  TEXT PRIMARY KEY,
    user_id             TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    -- identity (seed 003)
    name                TEXT NOT NULL,
    slug                TEXT NOT NULL,
    agent_name          TEXT NOT NULL,
    user_name           TEXT,
    timezone            TEXT NOT NULL DEFAULT 'UTC',
    communication_style TEXT,
    -- docker (observed facts we keep)
    container_id        TEXT,
    container_port      BIGINT CHECK (container_port BETWEEN 40000 AND 50000),
    status              TEXT NOT NULL CHECK (status IN ('PENDING', 'STARTING', 'RUNNING', 'STOPPING', 'STOPPED', 'ERROR')),
    -- llm
    provider            TEXT NOT NULL,
    provider_url        TEXT,
    model               TEXT NOT NULL,
    temperature         DOUBLE PRECISION NOT NULL,
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
    memory_mb           DOUBLE PRECISION,
    cpu_percent         DOUBLE PRECISION,
    last_health_at      TIMESTAMPTZ,
    -- reconciler
    desired_state       TEXT NOT NULL DEFAULT 'running' CHECK (desired_state IN ('running', 'stopped', 'deleted')),
    attempts            BIGINT NOT NULL DEFAULT 0,
    next_attempt_at     TIMESTAMPTZ,
    last_error          TEXT,
    spec_hash           TEXT,
    image               TEXT NOT NULL,
    memory_limit_mb     BIGINT NOT NULL,
    nano_cpus           BIGINT NOT NULL,
    ever_running        BOOLEAN NOT NULL DEFAULT FALSE,
    -- State.StartedAt of the container start the stored token was paired for:
    -- a later start means the agent must be re-paired. Docker's instants have
    -- nanoseconds, TIMESTAMPTZ microseconds: the store rounds up.
    paired_started_at   TIMESTAMPTZ,
    created_at          TIMESTAMPTZ NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL,
    -- Bumped by every PATCH that changes what is injected into the container
    -- (config, persona, secrets); a deploy that finishes on an older
    -- generation deploys again instead of reaching RUNNING with a stale config.
    config_generation   BIGINT NOT NULL DEFAULT 0,
    -- The generation the container that reached RUNNING was deployed with.
    deployed_generation BIGINT,
    CONSTRAINT agents_slug_key UNIQUE (slug),
    -- Port claims: two agents never hold one host port.
    CONSTRAINT agents_container_port_key UNIQUE (container_port)
);
CREATE INDEX agents_user_id ON agents (user_id);
CREATE INDEX agents_status ON agents (status);

-- Every status transition, kept after the agent is deleted (no foreign key).
-- Ids are committed in increasing order: every insert takes one advisory
-- transaction lock first (store/postgres/lifecycle.rs).
CREATE TABLE agent_events (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    agent_id    TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    slug        TEXT NOT NULL,
    from_status TEXT,
    to_status   TEXT NOT NULL,
    reason      TEXT NOT NULL,
    at          TIMESTAMPTZ NOT NULL
);
CREATE INDEX agent_events_agent ON agent_events (agent_id, id);
CREATE INDEX agent_events_user ON agent_events (user_id, id);

-- One row: this installation's id, generated at its first start. Every
-- container, volume and network zcaas creates carries it as the label
-- io.zcaas.installation, and every list, sweep and event filter is scoped to it.
CREATE TABLE installation (
    singleton  INTEGER PRIMARY KEY CHECK (singleton = 1),
    id         TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);

-- Named leases (one today: 'reconciler'). At most one unexpired holder.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);

-- One-use SSE tickets: only the SHA-256 of a ticket is kept.
CREATE TABLE stream_tickets (
    digest     BYTEA PRIMARY KEY CHECK (octet_length(digest) = 32),
    user_id    TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX stream_tickets_user ON stream_tickets (user_id);

-- Fixed-window rate-limit counters ('login:<email>', 'register:<address>').
CREATE TABLE rate_limits (
    key        TEXT PRIMARY KEY,
    window_end TIMESTAMPTZ NOT NULL,
    count      BIGINT NOT NULL
);
