"""The served OpenAPI document is good enough for a generated client: ``openapi-python-client``
turns ``/openapi.json`` of a live server into a package, and that package alone drives a flow
from upload to completion.

This catches what schema-only checks miss: responses a client cannot parse into the declared
models, undeclared status codes, operations a generator has to drop. Generation runs with
``--fail-on-warning``, so any operation left out of the client fails the test.

The one generator setting is ``content_type_overrides``: ``application/wasm`` (the module
upload's body) is not a media type openapi-python-client knows, and without the override it
skips ``POST /v1/modules`` with "Unsupported content type application/wasm". Mapped to the
binary-body handling of ``application/octet-stream``, the generated function still sends
``Content-Type: application/wasm`` (the generator keeps the documented type), which the server
requires.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from flowkit import FLOWS, TERMINAL

PACKAGE = "dwasm_generated_client"
GENERATOR_CONFIG = """\
content_type_overrides:
  application/wasm: application/octet-stream
post_hooks: []
"""


def _generate(spec_url: str, workdir: Path) -> Path:
    """Generate the client package from the served document into ``workdir``; returns the
    package's directory. Skips only when the generator itself cannot start."""
    spec = workdir / "openapi.json"
    response = httpx.get(spec_url, timeout=30)
    assert response.status_code == 200, response.text
    spec.write_bytes(response.content)
    config = workdir / "generator.yaml"
    config.write_text(GENERATOR_CONFIG)
    target = workdir / PACKAGE
    result = subprocess.run(
        [sys.executable, "-m", "openapi_python_client", "generate", "--path", str(spec),
         "--config", str(config), "--meta", "none", "--output-path", str(target),
         "--fail-on-warning"],
        check=False, capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    cannot_start = re.search(r"No module named|^(ModuleNotFoundError|ImportError)\b", output,
                             re.MULTILINE)
    if result.returncode != 0 and cannot_start:
        pytest.skip(f"openapi-python-client cannot run: {output.strip().splitlines()[-1]}")
    assert result.returncode == 0, f"generation failed or warned:\n{output}"
    assert "Warning" not in output, f"generation warned:\n{output}"
    return target


@pytest.fixture
def generated(start_live_server: Any, tmp_path: Path) -> Iterator[tuple[ModuleType, str]]:
    """The generated package, imported, and the URL of the server it was generated from."""
    if importlib.util.find_spec("openapi_python_client") is None:
        pytest.skip("openapi-python-client is not installed (pip install openapi-python-client)")
    server = start_live_server()
    target = _generate(f"{server.url}/openapi.json", tmp_path)
    sys.path.insert(0, str(target.parent))
    try:
        yield importlib.import_module(PACKAGE), server.url
    finally:
        sys.path.remove(str(target.parent))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def _api(package: ModuleType, name: str) -> Any:
    return importlib.import_module(f"{package.__name__}.api.{name}")


def test_generated_client_drives_a_flow(generated: tuple[ModuleType, str]) -> None:
    package, url = generated
    models = importlib.import_module(f"{package.__name__}.models")
    types = importlib.import_module(f"{package.__name__}.types")
    upload = _api(package, "modules.modules_upload")
    flows_start = _api(package, "flows.flows_start")
    flows_get = _api(package, "flows.flows_get")
    flows_list = _api(package, "flows.flows_list")
    flows_events = _api(package, "flows.flows_events")

    with package.Client(base_url=url, raise_on_unexpected_status=True,
                        timeout=httpx.Timeout(30)) as client:
        wasm = (FLOWS / "hello.wasm").read_bytes()
        uploaded = upload.sync_detailed(client=client, body=types.File(
            payload=wasm, file_name="hello.wasm", mime_type="application/wasm"))
        assert uploaded.status_code == 201, uploaded.content
        module = uploaded.parsed
        assert isinstance(module, models.ModuleInfo) and module.size == len(wasm)
        again = upload.sync_detailed(client=client, body=types.File(payload=wasm))
        assert again.status_code == 200 and again.parsed.id == module.id

        started = flows_start.sync_detailed(
            client=client, body=models.StartFlow(module=module.id, stdin="Bob\n", id="gen-1"))
        assert started.status_code == 201, started.content
        flow = started.parsed
        assert isinstance(flow, models.Flow) and flow.id == "gen-1"
        assert flow.module == module.id

        deadline = time.monotonic() + 20
        while flow.status.value not in TERMINAL:
            assert time.monotonic() < deadline, f"flow did not finish: {flow.to_dict()}"
            time.sleep(0.02)
            flow = flows_get.sync(flow.id, client=client)
            assert isinstance(flow, models.Flow), flow
        assert flow.status == models.FlowStatus.COMPLETED, flow.to_dict()
        assert (flow.exit_code, flow.stdout, flow.stderr) == (0, "Hello, Bob!\n", "")
        assert flow.stdout_base64 is None and flow.finished_at is not None
        assert flow.additional_properties == {}, "fields missing from the Flow schema"

        listed = flows_list.sync(client=client, status=models.FlowStatus.COMPLETED)
        assert isinstance(listed, models.FlowList)
        assert [f.id for f in listed.items] == ["gen-1"]
        assert listed.items[0].exit_code == 0
        assert listed.items[0].additional_properties == {}

        events = flows_events.sync("gen-1", client=client, limit=1000)
        assert isinstance(events, models.EventList)
        kinds = [event.type_ for event in events.items]
        assert kinds[0] == "started" and "exit" in kinds, kinds
        assert all(isinstance(event.data, models.EventData) for event in events.items)
        assert [e.id for e in events.items] == sorted(e.id for e in events.items)

        missing = flows_get.sync_detailed("no-such-flow", client=client)
        assert missing.status_code == 404
        assert isinstance(missing.parsed, models.Problem) and missing.parsed.status == 404
