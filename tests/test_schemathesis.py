"""The served OpenAPI document is honest: schemathesis drives every operation of a real server
from its ``/openapi.json`` and checks every answer against that document.

The server is the complete service (``app.serve.build_app``) under uvicorn on a 127.0.0.1 port,
on a fresh database of the embedded PostgreSQL, with bearer tokens configured; requests are real
HTTP. The database holds real data first (example modules, a flow that finished, a flow waiting
for its 20 tasks, one waiting for signals) so that operations on existing ids answer 200, not
only 404.

* :func:`test_every_operation_conforms`: for each operation of the document, schemathesis'
  examples, coverage (boundary and invalid values, undeclared methods, missing headers, no or
  bad credentials) and fuzzing phases (``FUZZ_EXAMPLES`` each, positive and negative), with a
  fixed seed and derandomized. Fuzzed cases take ids, names and cursors of the seeded data part of
  the time (:func:`_seeded_values`): no generator guesses a flow id. Checks: no 5xx; status code,
  content type, headers and body as documented; invalid requests refused, valid ones not refused
  as malformed (:func:`valid_requests_pass_validation`); 401/403 without or with a bad token;
  ``Allow`` on 405s; and schemathesis' stateful checks where they apply.
* :func:`test_existing_resources_conform`: the operations schemathesis cannot reach with
  generated data (a task's lease, an export a flow has, idempotent repeats), on real ids, each
  answer validated the same way.
* :func:`test_security_is_declared_truthfully`: every operation's ``security`` and
  ``x-dwasm-scopes`` agree with what the server enforces for client, worker and admin tokens.

Generated input is narrowed twice, neither time to avoid an answer: a lease's long-poll
``wait`` is capped at 50 ms (``_bounded``; an empty queue would hold each request up to 30 s;
long-polls are tested in tests/test_tasks_api.py), and header values hold no control characters
(such a request is not HTTP; uvicorn answers it before the app sees it).

Each operation's Hypothesis test is built with schemathesis' own builder (``create_test``, the
phases its pytest integration runs): ``schemathesis.pytest.from_fixture`` cannot be used, as it
sets ``Function._nodeid``, which pytest 9 no longer has.

``positive_data_acceptance`` (a schema-valid request must get 2xx/404/409) is replaced by
:func:`valid_requests_pass_validation`: dwasm answers 422 with a problem of its own kind to
well-formed requests it cannot carry out (bytes that are not a WebAssembly module, a start naming
a module that was never uploaded, a query whose export traps), which no schema can express.
A valid request answered 400, 415 or 422 ``validation`` (the request validator's) is still a
failure: that is the document and the validator disagreeing.
"""

from __future__ import annotations

import collections
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import schemathesis
from dbfixtures import LiveServer
from flowkit import COUNTER_WAT, FLOWS, WASM, wait_for, wat
from hypothesis import strategies as st
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.core.result import Ok
from schemathesis.generation import derive_operation_seed, overrides
from schemathesis.generation.feedback import FeedbackSources
from schemathesis.generation.hypothesis.builder import (
    HypothesisTestConfig,
    HypothesisTestMode,
    create_test,
)

ADMIN = "conformance-admin-token-0123"
CLIENT = "conformance-client-token-0123"
WORKER = "conformance-worker-token-0123"
TOKENS = f"{ADMIN},client:{CLIENT},worker:{WORKER}"
SEED = 20260601
FUZZ_EXAMPLES = 10
MAX_TEST_WAIT = 0.05
CHECK_NAMES = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
               "response_headers_conformance", "response_schema_conformance",
               "negative_data_rejection", "missing_required_header", "unsupported_method",
               "allow_header_conformance", "ignored_auth", "use_after_free",
               "ensure_resource_availability", "object_level_authorization")
VALIDATION = "urn:dwasm:problem:validation"
CONTROL_CHARACTERS = "".join(chr(c) for c in range(32) if c != 9) + "\x7f"


def valid_requests_pass_validation(ctx: Any, response: Any, case: Any) -> bool | None:
    """A request generated from the document (positive mode) is never refused as malformed."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    status = response.status_code
    kind = None
    if status == 422:
        try:
            kind = response.json().get("type")
        except ValueError:
            kind = None
    if status in (400, 415) or kind == VALIDATION:
        raise AssertionError(f"a request valid by the document was refused as malformed: "
                             f"{status} {response.text[:500]}")
    return None


@dataclass
class Seeded:
    """What the database holds before schemathesis starts."""

    modules: dict[str, str] = field(default_factory=dict)  # example name -> module id
    flows: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    cursors: dict[str, list[str]] = field(default_factory=dict)  # path template -> cursors

    def known(self) -> dict[str, list[str]]:
        """Values for path parameters, by parameter name."""
        return {"flow_id": self.flows, "task_id": self.tasks, "id": list(self.modules.values()),
                "queue": ["square", "ticks"], "name": ["tick", "go"],
                "export": ["count", "add", "_start", "memory"]}


@pytest.fixture(scope="module")
def server(module_database_url: str) -> Iterator[LiveServer]:
    from app.api.settings import Settings
    from app.serve import build_app

    settings = Settings(database_url=module_database_url, api_tokens=TOKENS)
    live = LiveServer(build_app(settings), settings).start()
    try:
        yield live
    finally:
        live.stop()


def _admin(server: LiveServer) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN}"},
                        timeout=30)


@pytest.fixture(scope="module")
def seeded(server: LiveServer) -> Seeded:
    seed = Seeded()
    with _admin(server) as c:
        for name in ("hello", "fanout"):
            r = c.post("/v1/modules", content=(FLOWS / f"{name}.wasm").read_bytes(),
                       headers=WASM)
            assert r.status_code == 201, r.text
            seed.modules[name] = r.json()["id"]
        r = c.post("/v1/modules", content=wat(COUNTER_WAT), headers=WASM)
        assert r.status_code == 201, r.text
        seed.modules["counter"] = r.json()["id"]
        for flow_id, module, extra in (("seed-hello", "hello", {"stdin": "Ada"}),
                                       ("seed-fanout", "fanout", {}),
                                       ("seed-counter", "counter", {})):
            r = c.post("/v1/flows", json={"module": seed.modules[module], "id": flow_id,
                                          **extra})
            assert r.status_code == 201, r.text
            seed.flows.append(flow_id)
        assert wait_for(c, "seed-hello")["stdout"] == "Hello, Ada!\n"
        wait_for(c, "seed-fanout", ("waiting",))
        wait_for(c, "seed-counter", ("waiting",))
        seed.tasks = [f"seed-fanout/{i}" for i in (0, 1, 19)]
        for path in ("/v1/modules", "/v1/flows", "/v1/flows/seed-hello/events"):
            page = c.get(path, params={"limit": 1}).json()
            assert page["next_cursor"], page
            seed.cursors[path.replace("seed-hello", "{flow_id}")] = [page["next_cursor"]]
    return seed


def _seeded_values(seed: Seeded) -> Callable[[Any, Any], Any]:
    """A ``flatmap_case`` hook: in fuzzed valid cases, path parameters, a start's module, an
    upload's bytes and cursors take seeded values part of the time."""
    known = seed.known()
    uploads = [(FLOWS / f"{n}.wasm").read_bytes() for n in ("hello", "cpu")]

    def flatmap_case(context: Any, case: Any) -> Any:
        if case.meta is None or not case.meta.generation.mode.is_positive:
            return st.just(case)
        draws: dict[tuple[str, str | None], Any] = {}
        for name, value in (case.path_parameters or {}).items():
            if known.get(name):
                draws[("path", name)] = st.sampled_from([value, *known[name]])
        if isinstance(case.body, dict) and "module" in case.body:
            draws[("body", "module")] = st.sampled_from([case.body["module"],
                                                         *seed.modules.values()])
        if case.operation.path == "/v1/modules" and case.method.upper() == "POST":
            draws[("body", None)] = st.sampled_from([case.body, *uploads])
        if case.query and "cursor" in case.query:
            draws[("query", "cursor")] = st.sampled_from(
                [None, *seed.cursors.get(case.operation.path, [])])
        if not draws:
            return st.just(case)

        def apply(values: dict[tuple[str, str | None], Any]) -> Any:
            for (where, name), value in values.items():
                if where == "path":
                    case.path_parameters[name] = value
                elif where == "query" and value is None:
                    case.query.pop(name, None)
                elif where == "query":
                    case.query[name] = value
                elif name is None:
                    case.body = value
                else:
                    case.body[name] = value
            return case

        return st.fixed_dictionaries(draws).map(apply)

    return flatmap_case


@pytest.fixture(scope="module")
def api_schema(server: LiveServer, seeded: Seeded) -> Any:
    # Module uploads are raw bytes; cursors are opaque values the listings hand out.
    schemathesis.serializer.alias("application/wasm", "application/octet-stream")
    schemathesis.openapi.format("dwasm-cursor", st.sampled_from(
        sorted({c for cursors in seeded.cursors.values() for c in cursors})))
    config = schemathesis.Config.from_dict({
        "seed": SEED,
        "base-url": server.url,
        "request-timeout": 30,
        "suppress-health-check": ["all"],
        "auth": {"openapi": {"bearerAuth": {"bearer": ADMIN}}},
        "generation": {"max-examples": FUZZ_EXAMPLES, "deterministic": True,
                       "database": "none",
                       # A header with control characters is not HTTP: uvicorn's parser answers
                       # it (400, text/plain) before the app or its document are involved.
                       "exclude-header-characters": CONTROL_CHARACTERS},
    })
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json", config=config)
    schema.hook(_seeded_values(seeded))
    return schema


def _checks() -> list[Any]:
    load_all_checks()
    return [*CHECKS.get_by_names(list(CHECK_NAMES)), valid_requests_pass_validation]


def _bounded(case: Any) -> None:
    """A valid long-poll ``wait`` becomes at most ``MAX_TEST_WAIT`` seconds."""
    if isinstance(case.body, dict):
        wait = case.body.get("wait")
        if isinstance(wait, (int, float)) and not isinstance(wait, bool) \
                and MAX_TEST_WAIT < wait <= 30:
            case.body["wait"] = MAX_TEST_WAIT


def _short(text: str) -> str:
    return re.sub(r"(.)\1{15,}", r"\1\1\1…", text)[:4000]


def test_existing_resources_conform(api_schema: Any, seeded: Seeded) -> None:
    checks = _checks()

    def call(path: str, method: str, status: int | tuple[int, ...], **parts: Any) -> Any:
        operation = api_schema[path][method]
        if "body" in parts and "media_type" not in parts:
            parts["media_type"] = "application/json"
        parts["headers"] = {"Authorization": f"Bearer {ADMIN}", **parts.get("headers", {})}
        response = operation.Case(**parts).call_and_validate(checks=checks)
        expected = status if isinstance(status, tuple) else (status,)
        assert response.status_code in expected, (path, method, response.text)
        if "json" not in response.headers.get("content-type", [""])[0]:
            return response.content
        return response.json()

    wasm = {"media_type": "application/wasm"}
    call("/v1/modules", "POST", 200, body=(FLOWS / "hello.wasm").read_bytes(), **wasm)
    call("/v1/modules", "POST", 201, body=(FLOWS / "bigmem.wasm").read_bytes(), **wasm)
    call("/v1/modules/{id}", "GET", 200, path_parameters={"id": seeded.modules["counter"]})
    for path, cursor in seeded.cursors.items():
        params = {"flow_id": "seed-hello"} if "{flow_id}" in path else {}
        page = call(path, "GET", 200, path_parameters=params, query={"cursor": cursor[0]})
        assert page["items"], path

    start = {"module": seeded.modules["counter"], "id": "conform-counter", "args": ["a"]}
    call("/v1/flows", "POST", 201, body=start)
    call("/v1/flows", "POST", 200, body=start)
    call("/v1/flows", "POST", 409, body={**start, "args": ["b"]})
    for flow_id in seeded.flows:
        call("/v1/flows/{flow_id}", "GET", 200, path_parameters={"flow_id": flow_id},
             headers={"X-Dwasm-Consistency": "strong"})
        call("/v1/flows/{flow_id}/events", "GET", 200, path_parameters={"flow_id": flow_id})
    call("/v1/flows", "GET", 200, query={"status": "completed", "limit": 5})

    counter = {"flow_id": "seed-counter"}
    assert call("/v1/flows/{flow_id}/query/{export}", "POST", 200, body={"args": [2, 3]},
                path_parameters={**counter, "export": "add"})["results"] == [5]
    call("/v1/flows/{flow_id}/query/{export}", "POST", 422, body={"fuel": 1000},
         path_parameters={**counter, "export": "spin"})
    signal = {**counter, "name": "tick"}
    first = call("/v1/flows/{flow_id}/signals/{name}", "POST", 202, path_parameters=signal,
                 body=b"1", media_type="application/octet-stream",
                 headers={"Idempotency-Key": "k1"})
    again = call("/v1/flows/{flow_id}/signals/{name}", "POST", 202, path_parameters=signal,
                 body=b"1", media_type="application/octet-stream",
                 headers={"Idempotency-Key": "k1"})
    assert again["id"] == first["id"]
    call("/v1/flows/{flow_id}/cancel", "POST", 200, path_parameters={"flow_id":
                                                                      "conform-counter"})
    call("/v1/flows/{flow_id}/cancel", "POST", 409, path_parameters={"flow_id": "seed-hello"})

    lease_body = {"wait": 5, "max_tasks": 3}
    leased = call("/v1/queues/{queue}/lease-batch", "POST", 200, body=lease_body,
                  path_parameters={"queue": "square"})["tasks"]
    assert len(leased) == 3, leased
    single = call("/v1/queues/{queue}/lease", "POST", 200, body={"wait": 5},
                  path_parameters={"queue": "square"})
    a, b, c = leased
    task = {"task_id": a["id"]}
    call("/v1/tasks/{task_id}", "GET", 200, path_parameters=task)
    call("/v1/tasks/{task_id}/heartbeat", "POST", 200, path_parameters=task,
         body={"lease_id": a["lease_id"], "extend_seconds": 60})
    done = {"lease_id": a["lease_id"], "result_text": "0"}
    call("/v1/tasks/{task_id}/complete", "POST", 200, path_parameters=task, body=done)
    call("/v1/tasks/{task_id}/complete", "POST", 200, path_parameters=task, body=done)
    call("/v1/tasks/{task_id}/heartbeat", "POST", 409, path_parameters=task,
         body={"lease_id": a["lease_id"]})
    call("/v1/tasks/{task_id}/fail", "POST", 200, path_parameters={"task_id": b["id"]},
         body={"lease_id": b["lease_id"], "error": "try again"})
    results = call("/v1/task-reports", "POST", 200, body={"reports": [
        {"task_id": c["id"], "lease_id": c["lease_id"], "outcome": "complete",
         "result": "MQ=="},
        {"task_id": single["id"], "lease_id": "not-the-lease", "outcome": "complete",
         "result_text": "1"}]})["results"]
    assert [r["status"] for r in results] == [200, 409], results

    queue = {"queue": "square"}
    assert call("/v1/queues/{queue}", "GET", 200, path_parameters=queue)["leased"] >= 1
    call("/v1/queues/{queue}/policy", "PUT", 200, path_parameters=queue,
         body={"max_attempts": 4, "backoff_initial": 0.5})
    assert "square" in [q["name"] for q in call("/v1/queues", "GET", 200)["items"]]
    call("/v1/queues/{queue}/policy", "DELETE", 204, path_parameters=queue)
    call("/v1/queues/{queue}/policy", "DELETE", 404, path_parameters=queue)
    call("/v1/cluster", "GET", 200)
    call("/readyz", "GET", 200)
    call("/healthz", "GET", 200)
    call("/metrics", "GET", 200)


def test_every_operation_conforms(api_schema: Any, seeded: Seeded) -> None:
    checks = _checks()
    config = api_schema.config
    cases: collections.Counter[str] = collections.Counter()
    statuses: dict[str, collections.Counter[int]] = collections.defaultdict(collections.Counter)
    failures: dict[str, str] = {}
    began = time.monotonic()
    operations = [result.ok() for result in api_schema.get_all_operations()
                  if isinstance(result, Ok)]
    assert len(operations) == len(list(api_schema.get_all_operations()))

    def runner(label: str) -> Callable[[Any], None]:
        def run(case: Any) -> None:
            cases[label] += 1
            _bounded(case)
            response = case.call_and_validate(checks=checks)
            statuses[label][response.status_code] += 1
        return run

    for operation in operations:
        label = operation.label
        settings = HypothesisTestConfig(
            project=config,
            modes=[HypothesisTestMode.EXAMPLES, HypothesisTestMode.COVERAGE,
                   HypothesisTestMode.FUZZING],
            settings=config.get_hypothesis_settings(operation=operation, phase="fuzzing"),
            seed=derive_operation_seed(config.seed, label),
            override=overrides.with_config_headers(config, operation=operation),
            feedback=FeedbackSources())
        test = create_test(operation=operation, test_func=runner(label), config=settings)
        try:
            test()
        except Exception as exc:  # noqa: BLE001 - every operation runs; all are reported
            failures[label] = _short(f"{type(exc).__name__}: {exc}")
    elapsed = time.monotonic() - began
    print(f"\nschemathesis: {sum(cases.values())} cases on {len(operations)} operations in "
          f"{elapsed:.1f} s")
    for operation in operations:
        seen = ", ".join(f"{s}×{n}" for s, n in sorted(statuses[operation.label].items()))
        print(f"  {operation.label}: {cases[operation.label]} cases ({seen})")
    assert not failures, "\n\n".join(f"== {label}\n{text}" for label, text in failures.items())
    assert all(cases[op.label] > 0 for op in operations)
    # The seeded ids were used: existing resources answered, not only 404s.
    for label in ("GET /v1/flows/{flow_id}", "GET /v1/flows/{flow_id}/events",
                  "GET /v1/tasks/{task_id}", "GET /v1/modules/{id}", "GET /v1/queues/{queue}"):
        assert statuses[label][200] > 0, (label, statuses[label])


def test_security_is_declared_truthfully(server: LiveServer, seeded: Seeded) -> None:
    document = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        **document["components"]["securitySchemes"]["bearerAuth"],
        "type": "http", "scheme": "bearer"}
    samples = {"flow_id": "nope", "task_id": "nope/0", "id": "sha256:" + "0" * 64,
               "queue": "scope-probe", "name": "tick", "export": "count"}
    tokens = {"client": CLIENT, "worker": WORKER, "admin": ADMIN}
    checked = 0
    for template, item in document["paths"].items():
        path = re.sub(r"{(\w+)}", lambda m: samples[m.group(1)], template)
        for method, operation in item.items():
            if template in ("/healthz", "/readyz", "/metrics"):
                assert "security" not in operation, template
                assert httpx.request(method, server.url + path, timeout=30).status_code == 200
                continue
            assert operation["security"] == [{"bearerAuth": []}], (method, template)
            scopes = operation["x-dwasm-scopes"]
            assert "admin" in scopes and {"401", "403"} <= set(operation["responses"])
            anonymous = httpx.request(method, server.url + path, timeout=30)
            assert anonymous.status_code == 401, (method, template)
            assert anonymous.headers["www-authenticate"].startswith("Bearer")
            for scope, token in tokens.items():
                r = httpx.request(method, server.url + path, timeout=30, json={},
                                  headers={"Authorization": f"Bearer {token}"})
                if scope in scopes:
                    assert r.status_code not in (401, 403), (method, template, scope, r.text)
                else:
                    assert r.status_code == 403, (method, template, scope, r.text)
                    assert r.json()["required_scope"] == scopes[0]
            checked += 1
    assert checked >= 20
