-- Read models. Every table here is derived only from `events` and can be truncated and
-- rebuilt by `shiplog-api projections rebuild`.

CREATE TABLE environments (
    id              text PRIMARY KEY,
    name            text        NOT NULL,
    docker_endpoint text        NOT NULL,
    created_at      timestamptz NOT NULL
);

CREATE TABLE api_keys (
    id             uuid PRIMARY KEY,
    name           text        NOT NULL,
    -- SHA-256 of the whole key, hex. The plaintext is never stored.
    key_hash       text        NOT NULL CONSTRAINT api_keys_key_hash_unique UNIQUE,
    -- First characters of the key, for people to recognise it in lists.
    prefix         text        NOT NULL,
    permissions    text[]      NOT NULL,
    environment_id text,
    expires_at     timestamptz,
    created_at     timestamptz NOT NULL,
    revoked_at     timestamptz,
    revoke_reason  text
);

CREATE TABLE catalog_sources (
    id           text PRIMARY KEY,
    kind         text        NOT NULL,
    location     text        NOT NULL,
    created_at   timestamptz NOT NULL,
    revision     text,
    content_hash text,
    synced_at    timestamptz
);

CREATE TABLE catalog_stacks (
    stack_name  text  NOT NULL,
    version     text  NOT NULL,
    source_id   text  NOT NULL,
    file        text  NOT NULL,
    description text,
    variables   jsonb NOT NULL,
    manifest    text  NOT NULL,
    PRIMARY KEY (stack_name, version)
);

CREATE TABLE deployments (
    id               uuid PRIMARY KEY,
    environment_id   text        NOT NULL,
    stack_name       text        NOT NULL,
    kind             text        NOT NULL,
    status           text        NOT NULL,
    previous_version text,
    target_version   text        NOT NULL,
    force            boolean     NOT NULL DEFAULT false,
    requested_by     text        NOT NULL,
    attempt          integer     NOT NULL DEFAULT 0,
    worker           text,
    digests          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    message          text,
    created_at       timestamptz NOT NULL,
    started_at       timestamptz,
    finished_at      timestamptz
);
CREATE INDEX deployments_listing_idx ON deployments (created_at DESC, id DESC);
CREATE INDEX deployments_stack_idx ON deployments (environment_id, stack_name, created_at DESC);

CREATE TABLE deployment_statuses (
    deployment_id uuid        NOT NULL,
    seq           bigint      NOT NULL,
    state         text        NOT NULL,
    description   text,
    created_at    timestamptz NOT NULL,
    PRIMARY KEY (deployment_id, seq)
);

CREATE TABLE stacks (
    environment_id     text        NOT NULL,
    stack_name         text        NOT NULL,
    version            text        NOT NULL,
    variables          jsonb       NOT NULL,
    digests            jsonb       NOT NULL,
    services           jsonb       NOT NULL,
    last_deployment_id uuid        NOT NULL,
    state              text        NOT NULL,
    updated_at         timestamptz NOT NULL,
    PRIMARY KEY (environment_id, stack_name)
);
