"""Cluster topology: which node runs which flow (docs/cluster.md).

``create_topology`` (``topology.node``) gives the service one object for either mode: a
``Cluster`` (membership by etcd leases, a coordinator elected through etcd that assigns shards,
every node's view of the versioned shard map) or a ``SingleNode`` that owns every shard. Shard
ownership is fenced in PostgreSQL (``topology.fencing``), never trusted to etcd alone.
"""
