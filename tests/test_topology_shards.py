"""topology/shards.py and topology/config.py: the stable hash, the shard map's JSON, and the
assignment function's properties (balance, stickiness, bounded moves, epochs, convergence)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from topology.config import ClusterConfig, ClusterConfigError, Endpoint, parse_endpoints
from topology.shards import Assignment, Member, ShardMap, ShardMapError, plan, shard_of

# --- hashing ---------------------------------------------------------------------------------


def test_shard_of_is_stable_across_processes_and_matches_the_stored_flow_hash() -> None:
    ids = ["f-abc", "f-\u00e9t\u00e9", "", "f-" + "x" * 300]
    here = [shard_of(i, 256) for i in ids]
    code = ("from topology.shards import shard_of; import sys; "
            f"print([shard_of(i, 256) for i in {ids!r}])")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env={"PYTHONHASHSEED": "123", "PATH": ""},
                           cwd=str(__import__("pathlib").Path(__file__).parent.parent))
    assert other.stdout.strip() == str(here)
    from app.flows.store import shard_of as stored_hash
    assert all(shard_of(i, 256) == stored_hash(i) % 256 for i in ids)
    assert shard_of("f-abc", 1) == 0
    with pytest.raises(ValueError):
        shard_of("f", 0)


def test_shard_of_spreads_random_ids_evenly() -> None:
    import random

    rng = random.Random(7)
    counts = [0] * 64
    for _ in range(64 * 200):
        counts[shard_of(f"f-{rng.getrandbits(64):016x}", 64)] += 1
    assert min(counts) > 140 and max(counts) < 260, counts


# --- config ----------------------------------------------------------------------------------


def test_endpoints_parse_with_and_without_scheme() -> None:
    assert parse_endpoints("127.0.0.1:2379, http://etcd-1:2380,[::1]:2379") == (
        Endpoint("127.0.0.1", 2379), Endpoint("etcd-1", 2380), Endpoint("::1", 2379))
    assert str(Endpoint("::1", 2379)) == "[::1]:2379"


@pytest.mark.parametrize("bad", ["", "host", "host:", "host:abc", "host:0", "host:70000",
                                 "https://h:2379", "http://h:2379/path", "a:1,,b:2",
                                 "user@h:1"])
def test_bad_endpoints_are_clear_errors(bad: str) -> None:
    with pytest.raises(ClusterConfigError, match="DWASM_ETCD"):
        parse_endpoints(bad)


def test_config_from_env() -> None:
    single = ClusterConfig.from_env({}, port=8080)
    assert not single.cluster_mode and single.node_id.endswith("-8080")
    config = ClusterConfig.from_env({
        "DWASM_ETCD": "http://127.0.0.1:2379", "DWASM_NODE_ID": "n1", "DWASM_SHARDS": "64",
        "DWASM_ADVERTISE_URL": "http://127.0.0.1:9000", "DWASM_CLUSTER_SECRET": "s",
        "DWASM_LEASE_TTL": "3", "DWASM_HANDOFF_TIMEOUT": "1.5"})
    assert config.cluster_mode and config.node_id == "n1" and config.shards == 64
    assert config.lease_ttl == 3 and config.keepalive_every == 1.0
    assert config.handoff_timeout == 1.5 and config.secret == "s"
    for env, name in [({"DWASM_SHARDS": "0"}, "DWASM_SHARDS"),
                      ({"DWASM_SHARDS": "x"}, "DWASM_SHARDS"),
                      ({"DWASM_LEASE_TTL": "1"}, "DWASM_LEASE_TTL"),
                      ({"DWASM_NODE_ID": "a b"}, "DWASM_NODE_ID"),
                      ({"DWASM_ADVERTISE_URL": "localhost:80"}, "DWASM_ADVERTISE_URL"),
                      ({"DWASM_KEEPALIVE_INTERVAL": "20"}, "DWASM_KEEPALIVE_INTERVAL")]:
        with pytest.raises(ClusterConfigError, match=name):
            ClusterConfig.from_env(env)


# --- the shard map -----------------------------------------------------------------------


def _members(*names: str, draining: tuple[str, ...] = ()) -> dict[str, Member]:
    return {n: Member(n, f"{n}-inc", f"http://{n}", "draining" if n in draining else "ready")
            for n in names}


def _settle(current: ShardMap, members: dict[str, Member], *, max_moves: int = 4,
            rounds: int = 500) -> tuple[ShardMap, int]:
    """Applies plan, acknowledging every handoff, until nothing changes; (map, steps)."""
    for step in range(rounds):
        acks: dict[str, dict[int, int]] = {}
        for s, a in enumerate(current.assignments):
            if a.in_handoff and a.owner in members:
                acks.setdefault(a.owner, {})[s] = a.epoch
        members = {n: replace(m, released=acks.get(n, {})) for n, m in members.items()}
        new = plan(current, members, now=float(step), handoff_timeout=1e9, max_moves=max_moves)
        if new is current:
            return current, step
        check_step(current, new, members, max_moves)
        current = new
    raise AssertionError("plan did not converge")


def check_step(old: ShardMap, new: ShardMap, members: dict[str, Member], max_moves: int) -> None:
    """Invariants of every single plan step."""
    assert new.version == old.version + 1
    started = 0
    for s, (a, b) in enumerate(zip(old.assignments, new.assignments)):
        assert b.epoch >= a.epoch
        if (a.owner, a.incarnation) != (b.owner, b.incarnation):
            assert b.epoch == a.epoch + 1, "an owner change raises the epoch by one"
            live_owner = a.owner in members and members[a.owner].incarnation == a.incarnation
            # a live owner loses a shard only through a handoff it acknowledged
            assert not live_owner or (a.in_handoff and (b.owner, b.incarnation) ==
                                      (a.next_owner, a.next_incarnation)
                                      and members[a.owner].released.get(s) == a.epoch)
        else:
            assert b.epoch == a.epoch
        if b.in_handoff:
            assert b.next_owner in members and members[b.next_owner].state == "ready"
            if not a.in_handoff and members[b.owner].state == "ready":
                started += 1
    in_flight = sum(1 for a in new.assignments
                    if a.in_handoff and members[a.owner].state == "ready")
    assert started <= max_moves and in_flight <= max(max_moves, started)


def check_settled(current: ShardMap, members: dict[str, Member]) -> None:
    ready = [n for n, m in members.items() if m.state == "ready"]
    loads = {n: 0 for n in ready}
    for a in current.assignments:
        assert not a.in_handoff
        if ready:
            assert a.owner in loads and members[a.owner].incarnation == a.incarnation
            loads[a.owner] += 1
    if ready:
        assert max(loads.values()) - min(loads.values()) <= 1, loads


def test_first_map_assigns_everything_evenly_at_epoch_one() -> None:
    members = _members("a", "b", "c")
    first = plan(ShardMap.empty(16), members, now=0, handoff_timeout=10, max_moves=2)
    assert first.version == 1 and set(first.members) == {"a", "b", "c"}
    assert all(a.epoch == 1 and a.owner in members for a in first.assignments)
    assert sorted(len(first.owned_by(n, f"{n}-inc")) for n in members) == [5, 5, 6]
    assert plan(first, members, now=1, handoff_timeout=10, max_moves=2) is first  # sticky


def test_dead_member_shards_move_at_once_and_others_stay() -> None:
    members = _members("a", "b", "c")
    settled, _ = _settle(ShardMap.empty(30), members)
    alive = {n: m for n, m in members.items() if n != "c"}
    after = plan(settled, alive, now=0, handoff_timeout=10, max_moves=1)
    for old, new in zip(settled.assignments, after.assignments):
        if old.owner == "c":
            assert new.owner in ("a", "b") and new.epoch == old.epoch + 1
        else:
            assert new == old
    check_settled(after, alive)


def test_restarted_node_gets_its_shards_back_at_a_new_epoch() -> None:
    members = _members("a", "b")
    settled, _ = _settle(ShardMap.empty(10), members)
    restarted = dict(members, b=Member("b", "b-inc2", "http://b2"))
    after = plan(settled, restarted, now=0, handoff_timeout=10, max_moves=1)
    for old, new in zip(settled.assignments, after.assignments):
        if old.owner == "b":
            assert (new.owner, new.incarnation, new.epoch) == ("b", "b-inc2", old.epoch + 1)
        else:
            assert new == old
    assert after.owner_url(after.owned_by("b", "b-inc2")[0]) == "http://b2"


def test_handoff_waits_for_the_release_or_the_timeout() -> None:
    members = _members("a")
    one, _ = _settle(ShardMap.empty(4), members)
    two = dict(members, b=Member("b", "b-inc"))
    started = plan(one, two, now=100, handoff_timeout=5, max_moves=8)
    moving = [s for s, a in enumerate(started.assignments) if a.in_handoff]
    assert len(moving) == 2 and all(started.assignments[s].next_owner == "b" for s in moving)
    assert all(started.assignments[s].owner == "a" for s in moving)
    assert plan(started, two, now=104, handoff_timeout=5, max_moves=8) is started
    acked = dict(two, a=replace(two["a"], released={moving[0]: 1}))
    half = plan(started, acked, now=104, handoff_timeout=5, max_moves=8)
    assert half.assignments[moving[0]] == Assignment("b", "b-inc", 2)
    assert half.assignments[moving[1]].in_handoff
    timed_out = plan(half, acked, now=105, handoff_timeout=5, max_moves=8)
    assert timed_out.assignments[moving[1]] == Assignment("b", "b-inc", 2)
    check_settled(timed_out, two)


def test_draining_member_hands_everything_over_and_a_gone_target_is_replaced() -> None:
    members = _members("a", "b", "c")
    settled, _ = _settle(ShardMap.empty(12), members, max_moves=1)
    drain = _members("a", "b", "c", draining=("c",))
    started = plan(settled, drain, now=0, handoff_timeout=10, max_moves=1)
    moving = [s for s, a in enumerate(started.assignments) if a.in_handoff]
    assert sorted(moving) == settled.owned_by("c", "c-inc")  # all at once, not max_moves
    targets = {started.assignments[s].next_owner for s in moving}
    assert targets == {"a", "b"}
    without_b = {n: m for n, m in drain.items() if n != "b"}
    retargeted = plan(started, without_b, now=1, handoff_timeout=10, max_moves=1)
    assert all(retargeted.assignments[s].next_owner == "a" for s in moving)
    final, _ = _settle(retargeted, without_b)
    assert final.owned_by("c", "c-inc") == []
    check_settled(final, without_b)


def test_epoch_floor_from_postgres_wins_over_the_map() -> None:
    members = _members("a")
    first = plan(ShardMap.empty(3), members, now=0, handoff_timeout=1, max_moves=1,
                 epoch_floor={1: 41})
    assert [a.epoch for a in first.assignments] == [1, 42, 1]


def test_no_members_changes_nothing_but_the_members() -> None:
    settled, _ = _settle(ShardMap.empty(4), _members("a"))
    empty = plan(settled, {}, now=0, handoff_timeout=1, max_moves=1)
    assert empty.assignments == settled.assignments and empty.members == {}


def test_json_round_trip_and_malformed_maps() -> None:
    members = _members("a", "b", draining=("b",))
    m = plan(ShardMap.empty(8), _members("a", "b"), now=0, handoff_timeout=1, max_moves=1)
    m = plan(m, members, now=3.5, handoff_timeout=1, max_moves=1)
    assert any(a.in_handoff for a in m.assignments)
    again = ShardMap.loads(m.dumps())
    assert again == m or (again.same_content(m) and again.version == m.version)
    for bad in [b"", b"[]", b'{"version": 1}', b'{"version": "x", "assignments": [{}]}',
                b'{"version": 1, "shards": 2, "assignments": [{}]}',
                b'{"version": 1, "assignments": [{"epoch": "x"}]}',
                b'{"version": 1, "assignments": [{}], "members": {"a": {"node_id": "a"}}}']:
        with pytest.raises(ShardMapError):
            ShardMap.loads(bad)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[int, list[dict[str, Member]], int]:
    shards = draw(st.integers(1, 48))
    pool = ["n0", "n1", "n2", "n3", "n4", "n5"]
    steps = []
    for _ in range(draw(st.integers(1, 5))):
        names = draw(st.lists(st.sampled_from(pool), unique=True, max_size=6))
        draining = tuple(n for n in names if draw(st.booleans()) and draw(st.booleans()))
        generation = draw(st.integers(0, 1))
        steps.append({n: Member(n, f"{n}-g{generation}", None,
                                "draining" if n in draining else "ready") for n in names})
    return shards, steps, draw(st.integers(1, 6))


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_plan_properties_over_membership_changes(scenario: tuple) -> None:  # type: ignore[type-arg]
    shards, steps, max_moves = scenario
    current = ShardMap.empty(shards)
    for members in steps:
        current, _ = _settle(current, members, max_moves=max_moves)
        check_settled(current, members)
        assert plan(current, members, now=1e6, handoff_timeout=1.0,
                    max_moves=max_moves) is current  # settled maps are stable


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 64), st.integers(1, 5), st.integers(1, 8))
def test_a_joining_member_moves_few_shards_per_step(shards: int, before: int,
                                                    max_moves: int) -> None:
    members = _members(*[f"n{i}" for i in range(before)])
    settled, _ = _settle(ShardMap.empty(shards), members)
    joined = dict(members, new=Member("new", "new-inc"))
    step = plan(settled, joined, now=0, handoff_timeout=100, max_moves=max_moves)
    owners_changed = sum(1 for a, b in zip(settled.assignments, step.assignments)
                         if a.owner != b.owner)
    assert owners_changed == 0  # nothing moves before the owners release
    assert sum(1 for a in step.assignments if a.in_handoff) <= max_moves
    final, _ = _settle(step, joined, max_moves=max_moves)
    check_settled(final, joined)
    moved = sum(1 for a, b in zip(settled.assignments, final.assignments) if a.owner != b.owner)
    assert moved == len(final.owned_by("new", "new-inc"))  # only what the newcomer needed
