-- dwasm schema, version 2: fencing for the cluster (docs/cluster.md).
--
-- One row per shard that has ever been claimed: the epoch of its current owner. A node that
-- becomes a shard's owner raises the epoch (topology/fencing.py: claim); every transaction
-- that checkpoints or changes a flow first reads its shard's row FOR SHARE and aborts unless the
-- epoch is still the writer's (check). The claim's UPDATE and the writers' locking reads
-- conflict, so a deposed owner's write either commits before the new owner's claim or fails.

CREATE TABLE shard_epochs (
    shard        integer PRIMARY KEY CHECK (shard >= 0),
    epoch        bigint NOT NULL CHECK (epoch > 0),   -- only ever grows
    owner        text NOT NULL,                       -- node id of the claimer
    incarnation  text NOT NULL,                       -- its incarnation (one per process start)
    claimed_at   timestamptz NOT NULL DEFAULT now()
);
