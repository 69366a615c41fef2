-- Operational, NOT a projection (not rebuilt from the log): the compose projects a worker
-- saw on an environment's engine at its last probe, so the stack listing can show the
-- containers Shiplog does not manage, read-only. Overwritten by the newest observation.
CREATE TABLE environment_containers (
    environment_id text PRIMARY KEY,
    -- [{"project", "service", "name", "image", "state"}], sorted by project and name.
    containers     jsonb       NOT NULL,
    observed_at    timestamptz NOT NULL,
    observed_by    text        NOT NULL
);
