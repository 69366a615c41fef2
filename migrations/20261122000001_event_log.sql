-- The event log: the only source of truth. Append-only; projections are derived from it.
CREATE SEQUENCE events_global_position_seq;

CREATE TABLE events (
    -- Total order for readers. NOT commit order: see `transaction_id`.
    global_position bigint PRIMARY KEY DEFAULT nextval('events_global_position_seq'),
    stream_id       text        NOT NULL,
    stream_version  bigint      NOT NULL CHECK (stream_version > 0),
    event_type      text        NOT NULL,
    event_version   integer     NOT NULL DEFAULT 1,
    data            jsonb       NOT NULL,
    metadata        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    -- Lets a tailing reader stop below the oldest in-flight transaction
    -- (pg_snapshot_xmin(pg_current_snapshot())) so it never skips a late commit.
    transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    -- The optimistic-concurrency guard; the store maps its violation to a typed Conflict.
    CONSTRAINT events_stream_version_unique UNIQUE (stream_id, stream_version)
);

ALTER SEQUENCE events_global_position_seq OWNED BY events.global_position;
CREATE INDEX events_event_type_idx ON events (event_type);

-- Append-only, enforced by the database rather than by convention.
CREATE FUNCTION events_forbid_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the event log is append-only (% on events)', TG_OP;
END $$;

CREATE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_forbid_change();
CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_forbid_change();
