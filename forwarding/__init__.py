"""Forwarding of flow traffic between cluster nodes (not written yet)."""
