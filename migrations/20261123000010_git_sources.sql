-- Git catalog sources and the catalog revision each deployment ran.
-- Projection columns only: every value comes from events and is rebuilt with them.

-- Git sources: the ref and folder they read, and their credentials exactly as the event
-- holds them (secrets sealed, `sealed:v1:…`; never in clear).
ALTER TABLE catalog_sources
    ADD COLUMN git_ref     text,
    ADD COLUMN git_path    text,
    ADD COLUMN credentials jsonb;

-- The catalog source and revision (a git commit; NULL for folders and for deployments
-- recorded before this column) a deployment was requested with and a stack last ran.
ALTER TABLE deployments
    ADD COLUMN catalog_source   text,
    ADD COLUMN catalog_revision text;

ALTER TABLE stacks
    ADD COLUMN catalog_source   text,
    ADD COLUMN catalog_revision text;
