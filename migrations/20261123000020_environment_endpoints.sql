-- TLS and SSH endpoints: the environments projection keeps the paths of the credential
-- files on the workers' hosts (never their content), as recorded by EnvironmentRegistered.
ALTER TABLE environments
    ADD COLUMN tls jsonb,  -- {"ca_file", "cert_file", "key_file"}
    ADD COLUMN ssh jsonb;  -- {"identity_file"?, "known_hosts_file"?}

-- Operational, NOT a projection (not rebuilt from the log): whether each environment's
-- engine answered the last probe of a worker that serves it. Probes run every few seconds
-- on every worker, so recording them as events would flood the log with observations;
-- a row per environment, overwritten by the newest check, is all a reader needs.
CREATE TABLE environment_status (
    environment_id text PRIMARY KEY,
    reachable      boolean     NOT NULL,
    checked_at     timestamptz NOT NULL,
    checked_by     text        NOT NULL,
    -- The last failure, kept after the engine recovers, so an operator sees what happened.
    last_error     text,
    last_error_at  timestamptz
);
