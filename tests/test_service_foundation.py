"""The service's foundation: settings, database layer and migrations, problem details, health and
metrics, module uploads, OpenAPI, and ``dwasm serve`` / ``dwasm migrate`` as real processes.

Everything runs against a real PostgreSQL and real uvicorn servers on 127.0.0.1 (see
dbfixtures.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from app.api.metrics import Registry
from app.api.settings import Settings, SettingsError, parse_size
from app.db import Database, DatabaseUnavailable, MigrationError, migrate, pending_migrations
from app.db.migrate import load_migrations, migrations_dir
from app.db.pool import redact_url

ROOT = Path(__file__).resolve().parent.parent
FIB = (ROOT / "examples" / "fib.wasm").read_bytes()
WASI_STDIO = (ROOT / "tests" / "wasi" / "stdio.wasm").read_bytes()
HEADER = bytes.fromhex("0061736d01000000")
# A function declared to return i32 whose body returns nothing: decodes, fails validation.
INVALID = HEADER + bytes.fromhex("0105016000017f" "03020100" "0a040102000b")
WASM = {"Content-Type": "application/wasm"}


def tiny_module(tag: str) -> bytes:
    """A valid empty module made unique by a custom section named ``tag``."""
    name = tag.encode()
    payload = bytes([len(name)]) + name
    return HEADER + bytes([0, len(payload)]) + payload


def assert_problem(response: httpx.Response, status: int, type_: str | None = None) -> dict:
    """The response is an RFC 9457 problem with this status; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["type"], str) and body["type"]
    if type_ is not None:
        assert body["type"] == type_
    assert "detail" not in body or isinstance(body["detail"], str)
    return body


def raw_http(base_url: str, head: str, body_parts: tuple[bytes, ...] = ()) -> tuple[int, dict, bytes]:
    """Sends a hand-made request on a plain socket; returns status, headers and body.

    For what httpx will not do: announce a body and not send it, or stop mid-stream.
    """
    parts = urlsplit(base_url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n")
        for part in body_parts:
            sock.sendall(part)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed before the response head: {data!r}"
            data += chunk
        head_bytes, _, rest = data.partition(b"\r\n\r\n")
        lines = head_bytes.decode().split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip()
                   for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
    return status, headers, rest


@pytest.fixture
def client(live_server: Any) -> Iterator[httpx.Client]:
    with live_server.client() as c:
        yield c


# --------------------------------------------------------------------------------------------
# Settings and metrics (no server)


def test_parse_size() -> None:
    assert parse_size("16MiB") == 16 << 20
    assert parse_size("1024") == 1024
    assert parse_size("512k") == 512 << 10
    assert parse_size("2 G") == 2 << 30
    with pytest.raises(ValueError):
        parse_size("lots")


def test_settings_from_env() -> None:
    settings = Settings.from_env({"DWASM_DATABASE_URL": "postgresql://h/db",
                                  "DWASM_MAX_PAYLOAD": "1MiB", "DWASM_PORT": "9000"}, port=None)
    assert settings.database_url == "postgresql://h/db"
    assert settings.max_payload == 1 << 20
    assert settings.port == 9000
    assert settings.data_dir == Path(".dwasm")
    assert Settings.from_env({}).max_payload == 16 << 20
    assert Settings.from_env({"DWASM_PORT": "1"}, port=2).port == 2
    with pytest.raises(SettingsError, match="DWASM_MAX_PAYLOAD"):
        Settings.from_env({"DWASM_MAX_PAYLOAD": "huge"})
    with pytest.raises(SettingsError, match="DWASM_PORT"):
        Settings.from_env({"DWASM_PORT": "70000"})
    with pytest.raises(SettingsError, match="DWASM_LOG_LEVEL"):
        Settings.from_env({"DWASM_LOG_LEVEL": "loud"})


def test_metrics_text_format() -> None:
    registry = Registry()
    counter = registry.counter("jobs_total", "Jobs done.", ["queue"])
    counter.inc(queue='a"b')
    counter.inc(2, queue="c")
    assert registry.counter("jobs_total", "Jobs done.", ["queue"]) is counter
    with pytest.raises(ValueError):
        registry.gauge("jobs_total", "clash")
    with pytest.raises(ValueError):
        counter.inc(wrong="x")
    registry.gauge("temperature", "Heat.").set(21.5)
    histogram = registry.histogram("latency_seconds", "Latency.", buckets=[0.1, 1])
    histogram.observe(0.05)
    histogram.observe(0.5)
    histogram.observe(5)
    registry.gauge_callback("pool", "Pool.", ["state"], lambda: [({"state": "idle"}, 3)])
    text = registry.render()
    assert text.endswith("\n")
    assert "# TYPE jobs_total counter\n" in text
    assert 'jobs_total{queue="a\\"b"} 1\n' in text
    assert 'jobs_total{queue="c"} 2\n' in text
    assert "temperature 21.5\n" in text
    assert 'latency_seconds_bucket{le="0.1"} 1\n' in text
    assert 'latency_seconds_bucket{le="1.0"} 2\n' in text
    assert 'latency_seconds_bucket{le="+Inf"} 3\n' in text
    assert "latency_seconds_sum 5.55\n" in text
    assert "latency_seconds_count 3\n" in text
    assert 'pool{state="idle"} 3\n' in text


def test_redact_url() -> None:
    assert redact_url("postgresql://u:secret@h:5/db") == "postgresql://u:***@h:5/db"
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"


# --------------------------------------------------------------------------------------------
# Database layer and migrations


def test_migrations_are_found_and_ordered() -> None:
    migrations = load_migrations()
    assert migrations[0].name == "0001_init"
    assert [m.version for m in migrations] == sorted(m.version for m in migrations)
    assert migrations_dir().is_dir()


@pytest.mark.asyncio
async def test_database_transaction_and_json(database: Database) -> None:
    with pytest.raises(RuntimeError):
        async with database.transaction() as conn:
            await conn.execute("INSERT INTO modules (id, bytes, size, imports, exports) "
                               "VALUES ('x', '', 0, $1, $2)", [], [{"name": "f"}])
            raise RuntimeError("roll back")
    assert await database.pool.fetchval("SELECT count(*) FROM modules") == 0
    async with database.transaction() as conn:
        await conn.execute("INSERT INTO modules (id, bytes, size, imports, exports) "
                           "VALUES ('x', '', 0, $1, $2)", [], [{"name": "f"}])
    assert await database.pool.fetchval("SELECT exports FROM modules") == [{"name": "f"}]
    await database.ping()
    assert database.stats()["max"] == 5


@pytest.mark.asyncio
async def test_migrate_idempotent_and_concurrent(empty_database_url: str) -> None:
    dbs = [await Database.connect(empty_database_url, 1, 2) for _ in range(4)]
    try:
        assert [m.name for m in await pending_migrations(dbs[0])] == [
            m.name for m in load_migrations()]
        results = await asyncio.gather(*(migrate(db) for db in dbs))
        applied = [names for names in results if names]
        assert applied == [[m.name for m in load_migrations()]]  # exactly one applier
        assert await migrate(dbs[0]) == []                        # idempotent
        assert await pending_migrations(dbs[1]) == []
        rows = await dbs[0].pool.fetch("SELECT version, name FROM schema_migrations")
        assert len(rows) == len(load_migrations())
    finally:
        for db in dbs:
            await db.close()


@pytest.mark.asyncio
async def test_migration_changed_after_apply_is_refused(empty_database_url: str,
                                                         tmp_path: Path) -> None:
    first = tmp_path / "0001_first.sql"
    first.write_text("CREATE TABLE t1 (x int);")
    db = await Database.connect(empty_database_url)
    try:
        assert await migrate(db, load_migrations(tmp_path)) == ["0001_first"]
        (tmp_path / "0002_second.sql").write_text("CREATE TABLE t2 (x int);")
        other = tmp_path / "v2"
        other.mkdir()
        (other / "0001_first.sql").write_text("CREATE TABLE t1 (x bigint);")
        with pytest.raises(MigrationError, match="changed after it was applied"):
            await migrate(db, load_migrations(other))
        (other / "0001_first.sql").write_text(first.read_text())
        (other / "0002_broken.sql").write_text("CREATE TABLE nonsense (;")
        with pytest.raises(MigrationError, match="0002_broken.sql failed"):
            await migrate(db, load_migrations(other))
        # the failed migration left nothing behind: not recorded, lock released
        assert await db.pool.fetchval("SELECT count(*) FROM schema_migrations") == 1
        assert await db.pool.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0
    finally:
        await db.close()


@pytest.mark.asyncio
async def test_no_transaction_migration_builds_indexes_concurrently(
        empty_database_url: str, tmp_path: Path) -> None:
    (tmp_path / "0001_table.sql").write_text("CREATE TABLE t (x int);\n"
                                             "INSERT INTO t SELECT generate_series(1, 1000);")
    (tmp_path / "0002_index.sql").write_text(
        "-- dwasm: no-transaction\n-- builds without blocking writers\n"
        "DROP INDEX CONCURRENTLY IF EXISTS t_x;\n"
        "CREATE INDEX CONCURRENTLY t_x ON t (x);\n")
    migrations = load_migrations(tmp_path)
    assert [m.transactional for m in migrations] == [True, False]
    assert len(migrations[1].statements()) == 2
    db = await Database.connect(empty_database_url)
    try:
        # CREATE INDEX CONCURRENTLY fails inside a transaction: this only passes outside one.
        assert await migrate(db, migrations) == ["0001_table", "0002_index"]
        assert await db.pool.fetchval(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 't_x'::regclass") is True
        assert await migrate(db, migrations) == []
        # A failing statement: nothing recorded, the lock released; fixed, the file runs again
        # from its start.
        (tmp_path / "0003_more.sql").write_text(
            "-- dwasm: no-transaction\nDROP INDEX CONCURRENTLY IF EXISTS t_y;\n"
            "CREATE INDEX CONCURRENTLY t_y ON t (no_such_column);\n")
        with pytest.raises(MigrationError, match="0003_more.sql failed"):
            await migrate(db, load_migrations(tmp_path))
        assert await db.pool.fetchval("SELECT count(*) FROM schema_migrations") == 2
        assert await db.pool.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0
        (tmp_path / "0003_more.sql").write_text(
            "-- dwasm: no-transaction\nDROP INDEX CONCURRENTLY IF EXISTS t_y;\n"
            "CREATE INDEX CONCURRENTLY t_y ON t (x DESC);\n")
        assert await migrate(db, load_migrations(tmp_path)) == ["0003_more"]
        # Function bodies cannot be split safely: such a file is refused before it runs.
        (tmp_path / "0004_fn.sql").write_text(
            "-- dwasm: no-transaction\nCREATE FUNCTION f() RETURNS int LANGUAGE sql "
            "AS $$ SELECT 1; $$;\n")
        with pytest.raises(MigrationError, match="function bodies"):
            await migrate(db, load_migrations(tmp_path))
    finally:
        await db.close()


@pytest.mark.asyncio
async def test_connect_gives_up_with_a_clear_error(database_url: str) -> None:
    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    began = time.monotonic()
    with pytest.raises(DatabaseUnavailable) as info:
        await Database.connect(f"postgresql://u:hunter2@127.0.0.1:{port}/x", timeout=0.5)
    assert time.monotonic() - began < 5
    assert "hunter2" not in str(info.value) and "cannot connect" in str(info.value)
    missing = database_url.replace(urlsplit(database_url).path, "/no_such_database")
    with pytest.raises(DatabaseUnavailable, match="refused|does not exist"):
        await Database.connect(missing, timeout=5)


# --------------------------------------------------------------------------------------------
# Health, readiness, metrics, errors


def test_healthz_readyz(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready"
    assert body["checks"]["database"] == body["checks"]["migrations"] == "ok"
    assert set(body["checks"].values()) == {"ok"}


def test_readyz_reports_pending_migrations(start_live_server: Any,
                                           empty_database_url: str) -> None:
    from app.api import create_app

    # the core app only: the flow engine would not start on a database without its tables
    server = start_live_server(empty_database_url, app_factory=create_app, migrate_on_start=False)
    with server.client() as c:
        assert c.get("/healthz").status_code == 200
        body = assert_problem(c.get("/readyz"), 503, "urn:dwasm:problem:not-ready")
        assert body["checks"]["database"] == "ok"
        assert body["checks"]["migrations"].startswith("pending: 0001_init")


def test_metrics_count_requests(client: httpx.Client) -> None:
    client.get("/healthz")
    client.get("/no/such/thing")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'dwasm_http_requests_total{method="GET",route="/healthz",status="200"} 1' in text
    assert 'dwasm_http_requests_total{method="GET",route="unmatched",status="404"} 1' in text
    assert 'dwasm_http_request_duration_seconds_count{method="GET",route="/healthz"} 1' in text
    assert re.search(r'dwasm_db_pool_connections\{state="max"\} 10', text)


def test_errors_are_problems(client: httpx.Client) -> None:
    body = assert_problem(client.get("/nowhere"), 404, "about:blank")
    assert body["instance"] == "/nowhere"
    assert_problem(client.delete("/healthz"), 405)
    assert_problem(client.post("/v1/modules/sha256:" + "0" * 64, content=b"x"), 405)


def test_extension_points_and_500(start_live_server: Any) -> None:
    from fastapi import APIRouter

    from app.api import create_app

    events: list[str] = []

    class Engine:
        def __init__(self, db: Database, settings: Settings) -> None:
            self.db = db

        async def start(self) -> None:
            events.append("engine start")

        async def stop(self) -> None:
            events.append("engine stop")

    @contextlib.asynccontextmanager
    async def hook(app: Any) -> Any:
        events.append("hook enter")
        app.state.ready_checks["engine"] = lambda: asyncio.sleep(0, "warming up")
        yield
        events.append("hook exit")

    router = APIRouter(prefix="/v1/boom", tags=["boom"])

    @router.get("", name="explode")
    async def explode() -> None:
        raise RuntimeError("secret internals")

    server = start_live_server(app_factory=lambda s: create_app(
        s, routers=[router], engine_factory=Engine, lifespan_hooks=[hook],
        tags=[{"name": "boom", "description": "test"}]))
    assert events == ["engine start", "hook enter"]
    assert isinstance(server.app.state.engine, Engine)
    with server.client() as c:
        body = assert_problem(c.get("/v1/boom"), 500)
        assert "secret" not in json.dumps(body)
        ready = assert_problem(c.get("/readyz"), 503)
        assert ready["checks"]["engine"] == "warming up"
        ids = [op["operationId"] for path in c.get("/openapi.json").json()["paths"].values()
               for op in path.values()]
        assert "boom_explode" in ids
    server.stop()
    assert events == ["engine start", "hook enter", "hook exit", "engine stop"]


# --------------------------------------------------------------------------------------------
# Modules


def test_upload_module(client: httpx.Client) -> None:
    first = client.post("/v1/modules", content=FIB, headers=WASM)
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["id"] == "sha256:" + hashlib.sha256(FIB).hexdigest()
    assert body["size"] == len(FIB)
    assert body["imports"] == []
    assert {"name": "fib", "kind": "func"} in body["exports"]
    assert {"name": "memory", "kind": "memory"} in body["exports"]
    assert first.headers["location"] == f"/v1/modules/{body['id']}"
    again = client.post("/v1/modules", content=FIB,
                        headers={"Content-Type": "application/wasm; charset=binary"})
    assert again.status_code == 200
    assert again.json() == body
    assert client.get(f"/v1/modules/{body['id']}").json() == body


def test_upload_lists_imports(client: httpx.Client) -> None:
    body = client.post("/v1/modules", content=WASI_STDIO, headers=WASM).json()
    assert body["imports"]
    assert all(imp["module"] == "wasi_snapshot_preview1" and imp["kind"] == "func"
               for imp in body["imports"])
    assert {"name": "_start", "kind": "func"} in body["exports"]


@pytest.mark.parametrize("data, reason, words", [
    (INVALID, "invalid", "type mismatch"),
    (b"\0asm\x02\0\0\0", "malformed", "unknown binary version"),
    (b"not wasm at all", "malformed", "magic header"),
    (FIB[:-3], "malformed", ""),
    (b"", "malformed", "empty"),
])
def test_upload_rejects_bad_modules(client: httpx.Client, data: bytes, reason: str,
                                    words: str) -> None:
    body = assert_problem(client.post("/v1/modules", content=data, headers=WASM), 422,
                          "urn:dwasm:problem:invalid-module")
    assert body["reason"] == reason
    assert words in body["detail"]
    assert client.get("/v1/modules").json()["items"] == []  # nothing stored


@pytest.mark.parametrize("headers", [{"Content-Type": "application/json"},
                                     {"Content-Type": "application/octet-stream"}, {}])
def test_upload_wrong_content_type(client: httpx.Client, headers: dict) -> None:
    body = assert_problem(client.post("/v1/modules", content=FIB, headers=headers), 415)
    assert "application/wasm" in body["detail"]


def test_upload_too_large(start_live_server: Any) -> None:
    server = start_live_server(max_module_size=1024)
    oversized = tiny_module("x" * 100) + b"\0" * 2000
    with server.client() as c:
        body = assert_problem(c.post("/v1/modules", content=oversized, headers=WASM), 413,
                              "urn:dwasm:problem:payload-too-large")
        assert body["limit"] == 1024
        # streamed without a length (chunked): refused when the count passes the limit
        stream = (oversized[i:i + 300] for i in range(0, len(oversized), 300))
        assert_problem(c.post("/v1/modules", content=stream, headers=WASM), 413)
        assert c.get("/v1/modules").json()["items"] == []

    # Announced as 1 GiB, never sent: the answer comes without waiting for the body.
    status, headers, raw = raw_http(server.url, "POST /v1/modules HTTP/1.1\nHost: t\n"
                                    "Content-Type: application/wasm\n"
                                    f"Content-Length: {1 << 30}\n")
    assert status == 413 and headers["content-type"] == "application/problem+json"
    assert json.loads(raw)["status"] == 413

    # A client that waits for 100 Continue gets the 413 instead, and never sends the body.
    status, _, raw = raw_http(server.url, "POST /v1/modules HTTP/1.1\nHost: t\n"
                              "Content-Type: application/wasm\nExpect: 100-continue\n"
                              "Content-Length: 2000\n")
    assert status == 413

    # The app-wide cap applies to every route, before routing.
    status, _, raw = raw_http(server.url, "POST /healthz HTTP/1.1\nHost: t\n"
                              f"Content-Length: {1 << 40}\n")
    assert status == 413 and json.loads(raw)["limit"] == server.settings.max_request_body


def test_request_body_cap_on_every_route(start_live_server: Any) -> None:
    server = start_live_server(max_module_size=1024, max_payload=1024)
    cap = server.settings.max_request_body
    with server.client() as c:
        big = b"{" + b" " * cap + b"}"
        body = assert_problem(c.post("/healthz", content=big), 413)
        assert body["limit"] == cap
        chunks = (big[i:i + 65536] for i in range(0, len(big), 65536))
        assert_problem(c.post("/v1/modules", content=chunks, headers=WASM), 413)
        assert c.get("/healthz").status_code == 200


def test_list_and_get_modules(client: httpx.Client) -> None:
    ids = []
    for i in range(5):
        response = client.post("/v1/modules", content=tiny_module(f"m{i}"), headers=WASM)
        assert response.status_code == 201
        ids.append(response.json()["id"])
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/modules", params=params).json()
        pages += 1
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == list(reversed(ids))  # newest first, each once
    assert client.get("/v1/modules").json()["next_cursor"] is None
    one = client.get(f"/v1/modules/{ids[0]}").json()
    assert one["id"] == ids[0] and one["size"] == len(tiny_module("m0"))


def test_list_modules_bad_parameters(client: httpx.Client) -> None:
    for params in ({"limit": 0}, {"limit": 1001}, {"limit": "many"}):
        body = assert_problem(client.get("/v1/modules", params=params), 422,
                              "urn:dwasm:problem:validation")
        assert body["errors"][0]["loc"] == ["query", "limit"]
    for cursor in ("garbage", "W10", "WyJ4IiwieSJd"):  # not base64 / [] / ["x","y"]
        body = assert_problem(client.get("/v1/modules", params={"cursor": cursor}), 422)
        assert body["errors"][0]["loc"] == ["query", "cursor"]


def test_get_module_unknown_or_bad_id(client: httpx.Client) -> None:
    body = assert_problem(client.get("/v1/modules/sha256:" + "ab" * 32), 404,
                          "urn:dwasm:problem:module-not-found")
    assert "sha256:" + "ab" * 32 in body["detail"]
    for bad in ("nope", "sha256:xyz", "sha256:" + "A" * 64, "md5:" + "0" * 32):
        body = assert_problem(client.get(f"/v1/modules/{bad}"), 422)
        assert body["errors"][0]["loc"] == ["path", "id"]


def test_concurrent_uploads_of_the_same_bytes(client: httpx.Client, live_server: Any) -> None:
    data = tiny_module("race")

    async def upload_many() -> list[int]:
        async with httpx.AsyncClient(base_url=live_server.url) as c:
            responses = await asyncio.gather(*(c.post("/v1/modules", content=data, headers=WASM)
                                               for _ in range(8)))
        return sorted(r.status_code for r in responses)

    assert asyncio.run(upload_many()) == [200] * 7 + [201]


# --------------------------------------------------------------------------------------------
# OpenAPI


def test_openapi_operation_ids_tags_and_problem_schemas(client: httpx.Client) -> None:
    doc = client.get("/openapi.json").json()
    operations = [(path, method, op) for path, item in doc["paths"].items()
                  for method, op in item.items()]
    ids = [op["operationId"] for _, _, op in operations]
    assert len(ids) == len(set(ids))
    assert {"ops_healthz", "ops_readyz", "ops_metrics", "modules_upload", "modules_list",
            "modules_get"} <= set(ids)
    for path, method, op in operations:
        assert re.fullmatch(r"[a-z]+_[a-z_]+", op["operationId"]), (path, method)
        assert op["tags"], (path, method)
        for status, response in op["responses"].items():
            if status.startswith(("4", "5")):
                assert list(response["content"]) == ["application/problem+json"], (path, status)
    assert {t["name"] for t in doc["tags"]} >= {"ops", "modules"}
    upload = doc["paths"]["/v1/modules"]["post"]
    assert "application/wasm" in upload["requestBody"]["content"]
    assert set(upload["responses"]) >= {"200", "201", "413", "415", "422"}
    schemas = doc["components"]["schemas"]
    assert {"ModuleInfo", "ModuleList", "Problem", "ValidationProblem"} <= set(schemas)
    assert "HTTPValidationError" not in schemas


# --------------------------------------------------------------------------------------------
# dwasm serve / dwasm migrate as processes


def _cli_env(**extra: str) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("DWASM_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def test_dwasm_migrate_processes_at_once(empty_database_url: str) -> None:
    env = _cli_env(DWASM_DATABASE_URL=empty_database_url)
    procs = [subprocess.Popen([sys.executable, "-m", "app.cli", "migrate"], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    applied, up_to_date = sorted(err.strip().splitlines()[-1] for _, err in outputs)
    assert applied == "applied migrations: " + ", ".join(m.name for m in load_migrations())
    assert up_to_date == "database schema is up to date"


def test_dwasm_serve_bad_database_url_fails_cleanly() -> None:
    env = _cli_env(DWASM_DATABASE_URL="postgresql://u:hunter2@127.0.0.1:1/x",
                   DWASM_DB_CONNECT_TIMEOUT="0.3")
    result = subprocess.run([sys.executable, "-m", "app.cli", "serve", "--port", "0"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 7
    assert result.stderr.startswith("error: cannot connect to PostgreSQL")
    assert "hunter2" not in result.stderr and "Traceback" not in result.stderr


def test_dwasm_serve_port_in_use(database_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
                                cwd=ROOT, env=_cli_env(DWASM_DATABASE_URL=database_url),
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 7
    assert f"error: cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr


def test_dwasm_serve_process_with_database_url(spawn_server: Any) -> None:
    server = spawn_server()
    assert httpx.get(f"{server.url}/readyz").status_code == 200
    server.restart(kill=True)  # a crash, then a start on the same port
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    assert server.stop() == 0
    assert "Traceback" not in server.log()


def test_dwasm_serve_with_embedded_postgres(spawn_server: Any, tmp_path: Path) -> None:
    from app.db.embedded import EmbeddedPostgres

    data_dir = tmp_path / "node"
    began = time.monotonic()
    server = spawn_server(embedded=True, data_dir=data_dir)
    started = time.monotonic() - began
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{server.url}/readyz").status_code == 200
    response = httpx.post(f"{server.url}/v1/modules", content=FIB, headers=WASM)
    assert response.status_code == 201
    console = re.search(r"web console: (\S+)", server.log())
    assert console is not None and console.group(1) == f"{server.url}/ui"
    page = httpx.get(console.group(1))
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert server.stop() == 0
    log = server.log()
    assert f"starting embedded PostgreSQL in {data_dir}" in log
    assert "listening on http://127.0.0.1:" in log
    assert "stopped embedded PostgreSQL" in log
    assert "Traceback" not in log
    assert EmbeddedPostgres.attach(data_dir) is None  # nothing left running
    print(f"dwasm serve with a new embedded PostgreSQL listened after {started:.1f} s")
