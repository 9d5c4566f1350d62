"""``GET /v1/cluster``: this node's view of the cluster (members, shard map, its version)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

router = APIRouter(tags=["cluster"])


class ClusterMember(BaseModel):
    model_config = ConfigDict(extra="allow")

    node_id: str
    incarnation: str | None = None
    url: str | None = None
    state: str | None = Field(None, description="ready or draining")


class ShardAssignment(BaseModel):
    model_config = ConfigDict(extra="allow")

    owner: str | None = None
    incarnation: str | None = None
    epoch: int = 0
    next_owner: str | None = Field(None, description="set while the shard is in handoff")


class ClusterView(BaseModel):
    """What this node knows. In single-node mode there is no map: the node owns every shard."""

    model_config = ConfigDict(extra="allow")

    mode: str = Field(description="cluster (etcd) or single")
    node_id: str
    ready: bool
    shards: int = Field(description="number of shards")
    version: int = Field(0, description="version of the shard map this node routes with")
    members: dict[str, ClusterMember] = Field(default_factory=dict,
                                              description="members in the shard map")
    assignments: list[ShardAssignment] | None = Field(
        None, description="owner of each shard (index = shard); null in single-node mode")


def cluster_view(snapshot: dict[str, Any]) -> ClusterView:
    """The response for a topology's ``snapshot()``."""
    shard_map = snapshot.get("map") or {}
    rest = {k: v for k, v in snapshot.items() if k not in ("map", "version")}
    return ClusterView(**rest, version=int(snapshot.get("version", 0)),
                       members=shard_map.get("members", {}),
                       assignments=shard_map.get("assignments"))


@router.get("/v1/cluster", name="get", response_model=ClusterView,
            summary="Cluster members, the shard map and its version, as this node sees them")
async def get_cluster(request: Request) -> ClusterView:
    topology = getattr(request.app.state, "topology", None)
    if topology is None:
        raise HTTPException(503, "the cluster topology has not started yet")
    return cluster_view(topology.snapshot())
