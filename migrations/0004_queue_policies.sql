-- Per-queue retry policies (PUT /v1/queues/{queue}/policy). A queue without a row, and any
-- column left NULL, uses the service's defaults (DWASM_MAX_ATTEMPTS, DWASM_LEASE_TIMEOUT, ...).
CREATE TABLE queue_policies (
    queue            text PRIMARY KEY,
    max_attempts     integer CHECK (max_attempts BETWEEN 1 AND 1000),
    backoff_initial  double precision CHECK (backoff_initial >= 0),
    backoff_factor   double precision CHECK (backoff_factor >= 1),
    backoff_max      double precision CHECK (backoff_max >= 0),
    lease_timeout    double precision CHECK (lease_timeout > 0),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
