-- A key may be limited to named stacks (NULL: every stack of its environment scope).
ALTER TABLE api_keys ADD COLUMN stacks text[];
