"""Cluster topology: which node runs which flow (not written yet)."""
