-- dwasm schema, version 1: modules, flows with their checkpoints, memory chunks, tasks for
-- workers, signals, and the event history. Applied by app/db/migrate.py under an advisory lock.

CREATE TABLE modules (
    id          text PRIMARY KEY,                 -- 'sha256:<hex>' of the bytes
    bytes       bytea NOT NULL,
    size        integer NOT NULL,
    imports     jsonb NOT NULL,                   -- [{"module", "name", "kind"}]
    exports     jsonb NOT NULL,                   -- [{"name", "kind"}]
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Content-addressed, compressed memory chunks (vm/snapshot), shared by all checkpoints and flows.
CREATE TABLE chunks (
    hash        text PRIMARY KEY,                 -- sha256 hex of the raw chunk
    data        bytea NOT NULL                    -- zlib-compressed
);

CREATE TABLE flows (
    id              text PRIMARY KEY,
    module_id       text NOT NULL REFERENCES modules (id),
    status          text NOT NULL CHECK (status IN ('running', 'waiting', 'completed', 'failed',
                                                     'cancelled')),
    request         jsonb NOT NULL,               -- the start request: args, env, stdin (base64)
    request_hash    text NOT NULL,                -- for idempotent starts with a client id
    parent_id       text REFERENCES flows (id),   -- for child flows
    parent_handle   integer,
    exit_code       integer,
    error           text,
    stdout          bytea NOT NULL DEFAULT '\x',
    stderr          bytea NOT NULL DEFAULT '\x',
    waiting         jsonb,                        -- what the flow waits for (status 'waiting')
    wake_at         timestamptz,                  -- durable timer: run again at this time
    checkpoint      jsonb,                        -- latest snapshot manifest (docs/snapshot-format.md)
    checkpoint_seq  bigint NOT NULL DEFAULT 0,    -- grows with every checkpoint
    task_seq        integer NOT NULL DEFAULT 0,   -- tasks scheduled so far (task ids derive from it)
    shard           integer NOT NULL DEFAULT 0,   -- stable hash of the id, for the cluster
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);
CREATE INDEX flows_status ON flows (status, created_at);
CREATE INDEX flows_module ON flows (module_id, created_at);
CREATE INDEX flows_wake ON flows (wake_at) WHERE wake_at IS NOT NULL;
CREATE INDEX flows_parent ON flows (parent_id) WHERE parent_id IS NOT NULL;

-- Tasks are inserted in the same transaction as the checkpoint that follows their scheduling
-- (outbox). Their id is '<flow id>/<seq>', so a re-run after a crash cannot duplicate one.
CREATE TABLE tasks (
    id            text PRIMARY KEY,
    flow_id       text NOT NULL REFERENCES flows (id),
    seq           integer NOT NULL,
    queue         text NOT NULL,
    payload       bytea NOT NULL,
    status        text NOT NULL CHECK (status IN ('pending', 'leased', 'completed', 'failed',
                                                   'cancelled')),
    attempt       integer NOT NULL DEFAULT 0,
    max_attempts  integer NOT NULL,
    visible_at    timestamptz NOT NULL DEFAULT now(),   -- not leasable before (retry backoff)
    lease_id      text,                                  -- the current lease's token
    lease_until   timestamptz,
    result        bytea,
    error         text,
    delivered     boolean NOT NULL DEFAULT false,        -- the flow has seen the outcome
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (flow_id, seq)
);
CREATE INDEX tasks_ready ON tasks (queue, visible_at) WHERE status = 'pending';
CREATE INDEX tasks_leases ON tasks (lease_until) WHERE status = 'leased';

CREATE TABLE signals (
    id          bigserial PRIMARY KEY,
    flow_id     text NOT NULL REFERENCES flows (id),
    name        text NOT NULL,
    payload     bytea NOT NULL,
    consumed    boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX signals_pending ON signals (flow_id, name, id) WHERE NOT consumed;

CREATE TABLE events (
    id          bigserial PRIMARY KEY,
    flow_id     text NOT NULL REFERENCES flows (id),
    type        text NOT NULL,      -- started, task_scheduled, task_completed, task_failed, timer,
                                    -- signal, checkpoint, exit, cancelled, ...
    data        jsonb NOT NULL DEFAULT '{}',
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_flow ON events (flow_id, id);
