-- Idempotency-Key records of the hooks (operational, not a projection): a repeat of the same
-- request with the same key answers the original deployment; kept at least 24 hours.
CREATE TABLE idempotency_keys (
    -- Whose key: the API key id, so two clients never collide.
    scope         text        NOT NULL,
    key           text        NOT NULL,
    -- SHA-256 of the endpoint and body: the same key with another request is refused.
    fingerprint   text        NOT NULL,
    deployment_id uuid        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
