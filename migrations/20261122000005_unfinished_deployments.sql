-- Workers ask, before starting a deployment, whether an older one of the same stack is
-- still unfinished; this keeps that question cheap however long a stack's history grows.
CREATE INDEX deployments_unfinished_idx ON deployments (environment_id, stack_name)
    WHERE status IN ('queued', 'in_progress');
