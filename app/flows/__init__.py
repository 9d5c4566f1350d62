"""Durable flows: the guest ABI (``guest``: the ``dwasm`` import module and its durable state)
and the engine that runs flows against Postgres (``engine``).

docs/guest-abi.md describes the ABI a flow is written against.
"""
