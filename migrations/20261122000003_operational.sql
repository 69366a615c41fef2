-- Operational tables: NOT projections and not rebuilt from the log.

-- When a key was last used: written on every authenticated hook call, which would flood
-- the log as events (DESIGN §2), so it lives beside the api_keys projection.
CREATE TABLE api_key_usage (
    key_id       uuid PRIMARY KEY,
    last_used_at timestamptz NOT NULL
);

-- One lease per stack: who may deploy it now. `token` grows on every acquisition and
-- fences a worker whose lease expired: its appends check (stack, holder, token).
CREATE TABLE stack_leases (
    stack_key  text PRIMARY KEY,
    holder     text        NOT NULL,
    token      bigint      NOT NULL,
    expires_at timestamptz NOT NULL
);
