"""Forwarding of flow traffic between cluster nodes: any node accepts any request, writes to a
flow run on its owner (see docs/cluster.md, "Forwarding").

- :mod:`forwarding.middleware`: ``ForwardingMiddleware`` (ASGI), ``check_config``;
- :mod:`forwarding.proxy`: finding the owner and sending to it, with retries and deadlines;
- :mod:`forwarding.batch`: task-report batches split by owner and merged;
- :mod:`forwarding.auth`: HMAC signatures of forwarded requests;
- :mod:`forwarding.routes`: which request concerns which flow;
- :mod:`forwarding.cluster_api`: ``GET /v1/cluster``.
"""
