"""The web console (``/ui``, app/console/): its files over HTTP, then the real thing in Chromium
(Playwright) against real servers: uvicorn + PostgreSQL (``start_live_server``), and two
``dwasm serve`` processes sharing a real etcd for the console working through any node.

The browser tests need Debian's ``chromium`` (never a downloaded browser) and the ``playwright``
package. Without them they are skipped with the reason; with ``DWASM_REQUIRE_BROWSER=1`` (CI)
they fail instead. Screenshots go to the test's ``tmp_path`` (their paths are printed) and, when
``DWASM_TEST_ARTIFACTS`` names a directory, are copied there too.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest
from clusterkit import start_two_nodes
from flowkit import COUNTER_WAT, ONE_TASK_WAT, ROOT, TRAP_WAT, start, upload, wait_for, wat

from topology.shards import shard_of

ADMIN = "console-admin-token-0123"
CLIENT = "console-client-token-0123"
TOKENS = f"{ADMIN},client:{CLIENT}"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
# Playwright's auto-waiting assertions give up after this long (a flow finishes in well under).
WAIT_MS = 10_000


# --------------------------------------------------------------------------------------------
# The files, over plain HTTP


@pytest.fixture
def token_server(start_live_server: Any) -> Any:
    return start_live_server(api_tokens=TOKENS)


def _asset_paths(index: str) -> list[str]:
    return re.findall(r'(?:href|src)="(ui/static/[^"]+)"', index)


def test_console_files_are_served_openly_with_types_and_cache_headers(
        token_server: Any) -> None:
    server = token_server
    with httpx.Client(base_url=server.url, timeout=30) as anon:
        page = anon.get("/ui")
        assert page.status_code == 200, page.text
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.headers["cache-control"] == "no-cache"
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert _matches_etag(anon, "/ui", page.headers["etag"])
        assets = _asset_paths(page.text)
        assert {p.rsplit("/", 1)[1] for p in assets} == {"icon.svg", "style.css", "app.js"}
        version = assets[0].split("/")[2]
        assert re.fullmatch(r"[0-9a-f]{12}", version) and all(version in p for p in assets)

        # Every module the page loads, following relative imports from app.js, is served.
        types = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                 ".svg": "image/svg+xml"}
        seen: set[str] = set()
        todo = [f"/{p}" for p in assets]
        while todo:
            path = todo.pop()
            if path in seen:
                continue
            seen.add(path)
            r = anon.get(path)
            assert r.status_code == 200, (path, r.text)
            assert r.headers["content-type"] == types[Path(path).suffix], path
            assert r.headers["cache-control"] == "public, max-age=31536000, immutable", path
            assert r.headers["x-content-type-options"] == "nosniff"
            # Nothing is fetched from anywhere else: no absolute URLs but the SVG namespace.
            assert not re.findall(r"https?://(?!www\.w3\.org/2000/svg)", r.text), path
            base = path.rsplit("/", 1)[0]
            for spec in re.findall(r'\bfrom "(\.\.?/[^"]+)"', r.text):
                todo.append(os.path.normpath(f"{base}/{spec}"))
        assert {f"/ui/static/{version}/{name}.js" for name in (
            "api", "dom", "timeline", "flows", "modules", "queues", "cluster")} <= seen

        js = anon.get(f"/ui/static/{version}/app.js")
        assert anon.get(f"/ui/static/{version}/app.js",
                        headers={"If-None-Match": js.headers["etag"]}).status_code == 304
        head = anon.head(f"/ui/static/{version}/app.js")
        assert head.status_code == 200 and head.content == b""
        assert int(head.headers["content-length"]) == len(js.content)
        # Another release's (or no) version: still served, but revalidated every time.
        for other in ("/ui/static/app.js", "/ui/static/000000000000/app.js"):
            r = anon.get(other)
            assert (r.status_code, r.headers["cache-control"]) == (200, "no-cache"), other
            assert r.content == js.content

        for missing in ("/ui/static/nope.js", f"/ui/static/{version}/%2e%2e/router.py",
                        "/ui/static/%2e%2e/%2e%2e/router.py", "/ui/static/views"):
            r = anon.get(missing)
            assert r.status_code == 404, missing
            assert r.headers["content-type"].startswith("application/problem+json")
        slash = anon.get("/ui/", follow_redirects=False)
        assert (slash.status_code, slash.headers["location"]) == (308, "../ui")

        # The page is open; the API behind it is not. And the API document is unchanged.
        assert anon.get("/v1/flows").status_code == 401
        paths = anon.get("/openapi.json").json()["paths"]
        assert paths and not [p for p in paths if p.startswith("/ui")]


def test_every_console_file_is_package_data() -> None:
    """An installed wheel has only the files pyproject.toml's package-data names."""
    import tomllib

    package = ROOT / "app" / "console"
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["app.console"]
    shipped = {p for pattern in patterns for p in package.glob(pattern) if p.is_file()}
    files = {p for p in (package / "static").rglob("*") if p.is_file()}
    assert files and files <= shipped, sorted(str(p) for p in files - shipped)


def _matches_etag(client: httpx.Client, path: str, etag: str) -> bool:
    return client.get(path, headers={"If-None-Match": f'W/{etag}, "other"'}).status_code == 304


# --------------------------------------------------------------------------------------------
# In the browser


def _need_browser(reason: str) -> None:
    if os.environ.get("DWASM_REQUIRE_BROWSER") == "1":
        pytest.fail(f"DWASM_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
    pytest.skip(f"BROWSER TESTS SKIPPED: {reason} (set DWASM_REQUIRE_BROWSER=1 to fail instead)")


@pytest.fixture
def browser() -> Iterator[Any]:
    """Chromium, for one test. Playwright's sync API keeps an event loop running on this
    thread while it is open, and the database fixtures use ``asyncio.run``: so a test asks for
    its server before its page (fixtures are set up in the order of the test's arguments) and
    starts no server once the browser is up."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need_browser("the playwright package is not installed (pip install -e '.[test]')")
    executable = shutil.which("chromium") or ("/usr/bin/chromium"
                                              if os.access("/usr/bin/chromium", os.X_OK) else None)
    if executable is None:
        _need_browser("no chromium executable (Debian: apt-get install chromium)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class Shots:
    """Full-page screenshots into tmp_path (and DWASM_TEST_ARTIFACTS when set)."""

    def __init__(self, tmp_path: Path, test_name: str) -> None:
        self.tmp_path = tmp_path
        self.test_name = test_name
        self.saved: list[Path] = []

    def take(self, page: Any, name: str, selector: str | None = None) -> Path:
        """The whole page, or only where the element ``selector`` names is, when given: cut
        from the page, as it is at that moment (a live page redraws its elements)."""
        path = self.tmp_path / f"console-{name}.png"
        clip = None if selector is None else page.evaluate(
            "s => { const r = document.querySelector(s).getBoundingClientRect(); return "
            "{x: r.x + scrollX, y: r.y + scrollY, width: r.width, height: r.height}; }", selector)
        page.screenshot(path=str(path), full_page=True, clip=clip)
        print(f"screenshot: {path}")
        target = os.environ.get("DWASM_TEST_ARTIFACTS")
        if target:
            Path(target).mkdir(parents=True, exist_ok=True)
            copy = Path(target) / f"{self.test_name}-{name}.png"
            shutil.copyfile(path, copy)
            print(f"screenshot: {copy}")
        self.saved.append(path)
        return path

    @contextlib.contextmanager
    def on_failure(self, page: Any) -> Iterator[None]:
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):
                self.take(page, "failure")
            raise


@pytest.fixture
def shots(tmp_path: Path, request: pytest.FixtureRequest) -> Shots:
    return Shots(tmp_path, request.node.name)


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh tab (its own context: no sessionStorage carried over). Script errors in the page
    fail the test; the browser's own log lines for the 4xx answers the test provokes do not."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.on("console", lambda msg: errors.append(msg.text) if msg.type == "error"
           and not re.search(r"status of (401|403|422)\b", msg.text) else None)
    try:
        yield tab
    finally:
        context.close()
    assert not errors, f"errors in the page: {errors}"


def test_console_shows_flows_modules_queues_and_cluster(live_server: Any, page: Any,
                                                        shots: Shots) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=WAIT_MS)
    url = live_server.url
    with live_server.client() as api, shots.on_failure(page):
        hello = upload(api, "hello")
        parent_module = upload(api, "parent")
        counter = start(api, upload(api, wat(COUNTER_WAT)))
        counter_module = counter["module"]
        one_task = start(api, upload(api, wat(ONE_TASK_WAT)))
        trap = start(api, upload(api, wat(TRAP_WAT)))
        parent = start(api, parent_module, args=[hello])
        wait_for(api, parent["id"])
        wait_for(api, trap["id"])
        wait_for(api, one_task["id"], ("waiting",))
        child = api.get("/v1/flows", params={"parent": parent["id"]}).json()["items"]
        assert len(child) == 1

        # Start a flow from its module's page; its page follows it to the end.
        page.goto(f"{url}/ui#/modules/{hello}")
        expect(page.get_by_role("heading", name=hello)).to_be_visible()
        page.get_by_label("stdin").fill("Ada")
        page.get_by_role("button", name="Start flow").click()
        expect(page).to_have_url(re.compile(r"#/flows/f-"))
        started_id = page.url.rsplit("/", 1)[1]
        expect(page.get_by_test_id("flow-status")).to_have_text("completed")
        expect(page.get_by_test_id("stdout")).to_have_text("Hello, Ada!\n")
        expect(page.get_by_test_id("result")).to_contain_text("exit code 0")
        timeline = page.get_by_test_id("timeline")
        for kind in ("started", "exit", "checkpoint"):
            expect(timeline.locator(f"circle.tl-event[data-type={kind}]")).to_have_count(1)
        expect(page.get_by_test_id("events-table").locator("tbody tr")).to_have_count(
            len(api.get(f"/v1/flows/{started_id}/events").json()["items"]))
        assert api.get(f"/v1/flows/{started_id}").json()["stdout"] == "Hello, Ada!\n"
        shots.take(page, "flow")

        # A waiting flow: one signal from the page's form, two from outside; the page refreshes
        # by itself until the flow is done.
        page.goto(f"{url}/ui#/flows/{counter['id']}")
        expect(page.get_by_test_id("flow-status")).to_have_text("waiting")
        expect(page.get_by_test_id("waiting")).to_contain_text("signal “tick”")
        page.get_by_role("button", name="Send").click()
        expect(page.get_by_test_id("error-banner")).to_contain_text("Signal “tick” sent.")
        expect(page.locator("circle.tl-event[data-type=signal]")).to_have_count(1)
        for _ in range(2):
            assert api.post(f"/v1/flows/{counter['id']}/signals/tick").status_code == 202
        expect(page.get_by_test_id("flow-status")).to_have_text("completed")
        expect(page.get_by_test_id("stdout")).to_have_text("hi\n")
        expect(page.get_by_test_id("result")).to_contain_text("exit code 3")
        expect(page.locator("circle.tl-event[data-type=signal]")).to_have_count(3)
        expect(page.get_by_role("button", name="Cancel flow")).to_have_count(0)

        # A failed flow shows its error and stderr.
        page.goto(f"{url}/ui#/flows/{trap['id']}")
        expect(page.get_by_test_id("flow-status")).to_have_text("failed")
        expect(page.get_by_test_id("result")).to_contain_text("Failed")
        expect(page.get_by_test_id("stderr")).to_have_text("oops\n")

        # The list, its filters and its pages.
        page.goto(f"{url}/ui#/flows")
        rows = page.get_by_test_id("flows-table").locator("tbody tr")
        expect(rows).to_have_count(6)
        shots.take(page, "flows")
        page.get_by_label("Status").select_option("waiting")
        page.get_by_role("button", name="Apply").click()
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text(one_task["id"])
        page.get_by_role("link", name="Clear").click()
        expect(rows).to_have_count(6)  # the page is drawn again, with an empty form
        page.get_by_label("Module").fill(counter_module)
        page.get_by_role("button", name="Apply").click()
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text(counter["id"])
        page.goto(f"{url}/ui#/flows?parent={parent['id']}")
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text(child[0]["id"])
        page.goto(f"{url}/ui#/flows?limit=4")
        expect(rows).to_have_count(4)
        page.get_by_role("link", name="Older →").click()
        expect(rows).to_have_count(2)
        expect(page.get_by_role("link", name="Older →")).to_have_count(0)
        page.get_by_role("link", name="← Newest").click()
        expect(rows).to_have_count(4)
        # A bad filter: the API's problem (RFC 9457) is shown, the form stays.
        page.goto(f"{url}/ui#/flows?module=not-a-module")
        banner = page.get_by_test_id("error-banner")
        expect(banner).to_contain_text("422")
        expect(banner).to_contain_text("query.module")
        expect(page.get_by_label("Module")).to_have_value("not-a-module")

        # Modules, queues, cluster: real data.
        page.get_by_role("link", name="Modules", exact=True).click()
        modules = page.get_by_test_id("modules-table").locator("tbody tr")
        expect(modules).to_have_count(5)
        expect(page.get_by_test_id("modules-table")).to_contain_text(hello[:23])

        page.get_by_role("link", name="Queues", exact=True).click()
        work = page.locator("tr[data-queue=work]")
        expect(work).to_contain_text("1 pending · 0 leased")
        expect(work.locator("td").nth(3)).to_have_text("3")  # the default max attempts
        shots.take(page, "queues")

        cluster = api.get("/v1/cluster").json()
        page.get_by_role("link", name="Cluster", exact=True).click()
        expect(page.get_by_text("single node", exact=True)).to_be_visible()
        expect(page.get_by_text(cluster["node_id"], exact=True).first).to_be_visible()
        expect(page.get_by_test_id("map-version")).to_have_text(str(cluster["version"]))
        expect(page.get_by_test_id("shard-grid").locator(".shard")).to_have_count(
            cluster["shards"])
        shots.take(page, "cluster")


# Writes 10 × 64 KiB of "x", then "END\n", to stdout.
LOUD_WAT = """
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 32) "END\\n")
  (func (export "_start") (local $i i32)
    (memory.fill (i32.const 1024) (i32.const 120) (i32.const 65536))
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.const 65536))
    (loop $again
      (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $i) (i32.const 10))))
    (i32.store (i32.const 0) (i32.const 32))
    (i32.store (i32.const 4) (i32.const 4))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
"""


def test_console_shows_the_end_of_a_long_output(live_server: Any, page: Any,
                                                shots: Shots) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=WAIT_MS)
    with live_server.client() as api, shots.on_failure(page):
        loud = start(api, upload(api, wat(LOUD_WAT)))
        done = wait_for(api, loud["id"])
        assert len(done["stdout"]) == 10 * 65536 + 4
        page.goto(f"{live_server.url}/ui#/flows/{loud['id']}")
        expect(page.get_by_test_id("flow-status")).to_have_text("completed")
        expect(page.get_by_test_id("stdout-cut")).to_contain_text("last 256 KiB")
        shown = page.get_by_test_id("stdout").text_content()
        assert shown.endswith("xxEND\n") and len(shown) == 256 * 1024
        expect(page.get_by_text("655,364 bytes")).to_be_visible()


# Two bursts of four 40 ms durable sleeps (a checkpoint each, so events with their own times),
# 3 s of durable sleep between them.
GAP_WAT = """
(module
  (import "dwasm" "sleep_ms" (func $sleep (param i64)))
  (memory (export "memory") 1)
  (func $burst (local $i i32)
    (loop $again
      (call $sleep (i64.const 40))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $i) (i32.const 4)))))
  (func (export "_start")
    (call $burst)
    (call $sleep (i64.const 3000))
    (call $burst)))
"""


def _ms(iso: str) -> int:
    """An API timestamp in whole milliseconds since the epoch, as the page's ``Date`` reads it
    (microseconds are dropped, not rounded)."""
    from datetime import datetime

    moment = datetime.fromisoformat(iso)
    return int(moment.timestamp()) * 1000 + moment.microsecond // 1000


def _duration_text(ms: int) -> str:
    """dom.js ``duration()`` for a gap under a minute (``toFixed`` rounds the double's exact
    value half up, which Decimal(float) reproduces)."""
    from decimal import ROUND_HALF_UP, Decimal

    if ms < 1000:
        return f"{ms} ms"
    assert ms < 60_000, ms
    digits = "0.01" if ms < 10_000 else "0.1"
    return f"{Decimal(ms / 1000).quantize(Decimal(digits), rounding=ROUND_HALF_UP)} s"


def _timeline_geometry(page: Any) -> dict[str, Any]:
    """Where the timeline drew things: markers, breaks (band and label), status bars, ticks."""
    return page.evaluate("""() => {
      const svg = document.querySelector("[data-testid=timeline] svg");
      const num = (el, name) => parseFloat(el.getAttribute(name));
      return {
        width: num(svg, "width"),
        lanes: [...svg.querySelectorAll("rect.tl-lane")].map((r) => [num(r, "x"), num(r, "width")])[0],
        markers: [...svg.querySelectorAll("circle.tl-event")].map((c) => ({
          id: c.dataset.id, type: c.dataset.type, x: num(c, "cx"),
          title: c.querySelector("title").textContent })),
        breaks: [...svg.querySelectorAll("g.tl-break")].map((g) => {
          const band = g.querySelector("rect.tl-break-band");
          const label = g.querySelector("text.tl-break-label");
          return { gap: parseFloat(g.dataset.gapMs), x0: num(band, "x"),
                   x1: num(band, "x") + num(band, "width"),
                   label: label ? label.textContent : null };
        }),
        status: [...svg.querySelectorAll("rect.tl-status")].map((r) => ({
          cls: r.getAttribute("class"), x0: num(r, "x"), x1: num(r, "x") + num(r, "width") })),
        ticks: [...svg.querySelectorAll("text.tl-tick:not(.tl-break-label):not(.tl-now)")].map(
          (t) => ({ x: num(t, "x"), text: t.textContent })),
      };
    }""")


def test_console_timeline_cuts_a_long_wait_short(live_server: Any, page: Any,
                                                 shots: Shots) -> None:
    """A flow with two bursts of events a 3 s durable sleep apart: the sleep is drawn as a
    break with its length, both bursts are spread out on either side, the status lane runs
    through the break, and markers still answer clicks."""
    from playwright.sync_api import expect

    expect.set_options(timeout=WAIT_MS)
    with live_server.client() as api, shots.on_failure(page):
        flow = start(api, upload(api, wat(GAP_WAT)))
        wait_for(api, flow["id"], ("waiting",), pred=lambda f: (f.get("waiting") or {}).get(
            "op") == "sleep" and _ms(f["waiting"]["until"]) - _ms(f["created_at"]) > 2500)
        page.goto(f"{live_server.url}/ui#/flows/{flow['id']}")
        expect(page.get_by_test_id("waiting")).to_contain_text("timer until")
        # While it sleeps, the wait so far (up to "now") is already a break, drawn as waiting.
        breaks = page.locator("[data-testid=timeline] g.tl-break")
        expect(breaks).to_have_count(1)
        expect(breaks.locator("text.tl-break-label")).to_have_text(re.compile(r"^≈ \d"))
        live = _timeline_geometry(page)
        band = live["breaks"][0]
        assert band["x1"] > band["x0"] and band["x1"] < live["lanes"][0] + live["lanes"][1]
        assert any("st-waiting" in bar["cls"] and bar["x0"] <= band["x0"]
                   and bar["x1"] >= band["x1"] for bar in live["status"]), live["status"]
        shots.take(page, "timeline-sleeping")
        shots.take(page, "timeline-sleeping-closeup", "[data-testid=timeline]")

        done = wait_for(api, flow["id"])
        assert done["status"] == "completed", done
        expect(page.get_by_test_id("flow-status")).to_have_text("completed")
        events = api.get(f"/v1/flows/{flow['id']}/events").json()["items"]
        expect(page.locator("circle.tl-event")).to_have_count(len(events))

        # The longest gap between moments the page draws (start, events, end) is the sleep.
        moments = sorted({_ms(done["created_at"]), _ms(done["finished_at"]),
                          *(_ms(e["at"]) for e in events)})
        gaps = sorted(((b - a, a, b) for a, b in pairwise(moments)), reverse=True)
        gap, before_end, after_start = gaps[0]
        assert 2500 <= gap < 10_000 and gaps[1][0] * 20 < gap, gaps[:3]
        expect(breaks).to_have_count(1)
        expect(breaks.locator("text.tl-break-label")).to_have_text(f"≈ {_duration_text(gap)}")
        geo = _timeline_geometry(page)
        band = geo["breaks"][0]
        assert band["gap"] == gap and band["label"] == f"≈ {_duration_text(gap)}"

        # Markers fall on the right side of the break, and both bursts are spread out, where a
        # linear axis would have squeezed each into a few pixels.
        _, plot_w = geo["lanes"]
        at = {str(e["id"]): _ms(e["at"]) for e in events}
        left = [m["x"] for m in geo["markers"] if at[m["id"]] <= before_end]
        right = [m["x"] for m in geo["markers"] if at[m["id"]] >= after_start]
        assert len(left) >= 4 and len(right) >= 4 and len(left) + len(right) == len(events)
        assert max(left) < band["x0"] and min(right) > band["x1"], (left, right, band)
        span = moments[-1] - moments[0]
        for side, times in ((left, moments[:moments.index(before_end) + 1]),
                            (right, moments[moments.index(after_start):])):
            linear = (times[-1] - times[0]) / span * plot_w  # what a linear axis would give
            assert max(side) - min(side) > max(100, 3 * linear), (side, linear, band)
        assert any("st-waiting" in bar["cls"] and bar["x0"] <= band["x0"]
                   and bar["x1"] >= band["x1"] for bar in geo["status"]), geo["status"]
        assert any("st-completed" in bar["cls"] and bar["x0"] > band["x1"]
                   for bar in geo["status"]), geo["status"]
        # Readable ticks on both sides: several each, none drawn over another.
        ticks = sorted(geo["ticks"], key=lambda t: t["x"])
        assert ticks[0]["text"] == "0"
        assert len([t for t in ticks if t["x"] < band["x0"]]) >= 2
        after = [t for t in ticks if t["x"] > band["x1"]]
        assert len(after) >= 2 and after[0]["text"].startswith("+3"), after
        for a, b in pairwise(ticks):
            assert b["x"] - a["x"] > 6.7 * len(a["text"]) / 2, (a, b)

        # Hover titles and clicks still work after the break.
        last = max(geo["markers"], key=lambda m: m["x"])
        assert last["title"].startswith(f"#{last['id']} {last['type']} · +3.")
        page.locator(f"circle.tl-event[data-id='{last['id']}']").click()
        expect(page.locator(f"#ev-{last['id']}")).to_have_class(re.compile(r"\bflash\b"))
        shots.take(page, "timeline-break")
        shots.take(page, "timeline-break-closeup", "[data-testid=timeline]")


def test_console_timeline_breaks_hours_and_days(live_server: Any, page: Any,
                                                shots: Shots) -> None:
    """Waits no test can sit through, drawn by the page's own timeline module: three bursts of
    events 3 h 12 min and then a day and 2 h apart."""
    from playwright.sync_api import expect

    expect.set_options(timeout=WAIT_MS)
    with shots.on_failure(page):
        page.goto(f"{live_server.url}/ui")
        expect(page.get_by_text("No flows yet.")).to_be_visible()
        drawn = page.evaluate("""async () => {
          const src = document.querySelector("script[type=module]").src;
          const { timeline } = await import(src.replace(/app\\.js$/, "timeline.js"));
          const base = Date.parse("2024-05-01T10:00:00Z");
          const at = (ms) => new Date(base + ms).toISOString();
          const events = [];
          const burst = (start, types) => types.forEach((type, i) => events.push(
            { id: events.length + 1, type, at: at(start + i * 7), data: {} }));
          const second = (3 * 60 + 12) * 60_000;
          const third = second + 26 * 3_600_000;
          burst(0, ["started", "checkpoint", "task_scheduled", "checkpoint"]);
          burst(second, ["task_completed", "task_delivered", "checkpoint"]);
          burst(third, ["signal", "signal_received", "exit", "checkpoint"]);
          const flow = { created_at: at(0), finished_at: at(third + 21), status: "completed" };
          const view = document.getElementById("view");
          view.replaceChildren(timeline(flow, events, { width: 1000 }));
          const svg = view.querySelector("svg");
          return {
            breaks: [...svg.querySelectorAll("g.tl-break")].map((g) => [
              parseFloat(g.dataset.gapMs), g.querySelector(".tl-break-label").textContent]),
            markers: [...svg.querySelectorAll("circle.tl-event")].map((c) => [
              +c.dataset.id, parseFloat(c.getAttribute("cx"))]),
            ticks: [...svg.querySelectorAll("text.tl-tick:not(.tl-break-label)")].map(
              (t) => t.textContent),
            width: parseFloat(svg.getAttribute("width")),
          };
        }""")
        shots.take(page, "timeline-days", "#view svg")
    hour, minute = 3_600_000, 60_000
    assert drawn["breaks"] == [[3 * hour + 12 * minute - 21, "≈ 3 h 12 min"],
                               [26 * hour - 14, "≈ 1 d 2 h"]], drawn
    xs = [x for _, x in sorted(drawn["markers"])]
    assert xs == sorted(xs) and drawn["width"] == 1000, drawn
    # Each burst lasts 14-21 ms and yet spans well over a hundred pixels.
    for burst in (xs[0:4], xs[4:7], xs[7:11]):
        assert burst[-1] - burst[0] > 100, xs
    assert drawn["ticks"][0] == "0", drawn["ticks"]
    assert any(t.startswith("+3h12m00.0") for t in drawn["ticks"]), drawn["ticks"]
    assert any(t.startswith("+1d05h12m00.0") for t in drawn["ticks"]), drawn["ticks"]


def _cells(section: Any) -> list[list[str]]:
    """The text of each cell of each body row of the table in ``section``."""
    return [[cell.strip() for cell in row.locator("td").all_inner_texts()]
            for row in section.locator("tbody tr").all()]


def test_console_cancels_after_confirming_and_uploads_a_module(live_server: Any, page: Any,
                                                               shots: Shots) -> None:
    """The cancel button asks first: dismissed, nothing is sent and the flow keeps waiting;
    accepted, the flow is cancelled (on the page and in the API). Then a module uploaded with
    the form shows its imports and exports."""
    import hashlib

    from playwright.sync_api import expect

    expect.set_options(timeout=WAIT_MS)
    url = live_server.url
    with live_server.client() as api, shots.on_failure(page):
        flow = start(api, upload(api, wat(COUNTER_WAT)))
        wait_for(api, flow["id"], ("waiting",))
        posts: list[str] = []
        page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
        dialogs: list[str] = []

        page.goto(f"{url}/ui#/flows/{flow['id']}")
        expect(page.get_by_test_id("flow-status")).to_have_text("waiting")

        def dismiss(dialog: Any) -> None:
            dialogs.append(dialog.message)
            dialog.dismiss()

        page.once("dialog", dismiss)
        page.get_by_role("button", name="Cancel flow").click()
        # confirm() blocks the page until answered: once the click returns, the page has moved on.
        assert dialogs == [f"Cancel flow {flow['id']}, its pending tasks and its children?"]
        page.wait_for_function("() => true")  # one more turn of the page's event loop
        assert not [u for u in posts if u.endswith("/cancel")], posts
        expect(page.get_by_test_id("flow-status")).to_have_text("waiting")
        assert api.get(f"/v1/flows/{flow['id']}").json()["status"] == "waiting"

        def accept(dialog: Any) -> None:
            dialogs.append(dialog.message)
            dialog.accept()

        page.once("dialog", accept)
        page.get_by_role("button", name="Cancel flow").click()
        expect(page.get_by_test_id("flow-status")).to_have_text("cancelled")
        assert len(dialogs) == 2
        assert [u for u in posts if u.endswith("/cancel")] == [
            f"{url}/v1/flows/{flow['id']}/cancel"]
        expect(page.get_by_test_id("result")).to_contain_text("Cancelled")
        expect(page.get_by_role("button", name="Cancel flow")).to_have_count(0)
        expect(page.get_by_role("button", name="Send")).to_have_count(0)
        after = api.get(f"/v1/flows/{flow['id']}").json()
        assert after["status"] == "cancelled" and after["finished_at"], after
        expect(page.locator("rect.tl-status.st-cancelled")).to_have_count(1)
        shots.take(page, "cancelled")

        # Upload through the form: the module's page lists what the API says it imports/exports.
        wasm = ROOT / "examples" / "flows" / "hello.wasm"
        page.get_by_role("link", name="Modules", exact=True).click()
        expect(page.get_by_test_id("modules-table").locator("tbody tr")).to_have_count(1)
        page.set_input_files("#upload-file", str(wasm))
        page.get_by_role("button", name="Upload", exact=True).click()
        module_id = f"sha256:{hashlib.sha256(wasm.read_bytes()).hexdigest()}"
        expect(page).to_have_url(f"{url}/ui#/modules/{module_id.replace(':', '%3A')}")
        expect(page.get_by_role("heading", name=module_id)).to_be_visible()
        described = api.get(f"/v1/modules/{module_id}").json()
        assert described["imports"] and described["exports"], described
        imports = page.locator("section", has=page.get_by_role("heading", name="Imports"))
        exports = page.locator("section", has=page.get_by_role("heading", name="Exports"))
        expect(imports.locator("tbody tr")).to_have_count(len(described["imports"]))
        expect(exports.locator("tbody tr")).to_have_count(len(described["exports"]))
        assert _cells(imports) == [[i["module"], i["name"], i["kind"]]
                                   for i in described["imports"]]
        assert _cells(exports) == [[x["name"], x["kind"]] for x in described["exports"]]
        assert ["_start", "func"] in _cells(exports)
        shots.take(page, "module-uploaded")

        # Bytes that are not a module: the API's problem is shown, nothing is added.
        page.get_by_role("navigation", name="Sections").get_by_role("link", name="Modules").click()
        expect(page.get_by_test_id("modules-table").locator("tbody tr")).to_have_count(2)
        page.set_input_files("#upload-file", files=[{
            "name": "notes.wasm", "mimeType": "application/wasm", "buffer": b"not wasm"}])
        page.get_by_role("button", name="Upload", exact=True).click()
        banner = page.get_by_test_id("error-banner")
        expect(banner).to_contain_text("422")
        expect(banner).to_contain_text("Upload failed")
        assert len(api.get("/v1/modules").json()["items"]) == 2


def test_console_asks_for_a_token_and_keeps_it_in_the_tab(token_server: Any, page: Any,
                                                          shots: Shots) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=WAIT_MS)
    server = token_server
    with shots.on_failure(page):
        page.goto(f"{server.url}/ui")
        form = page.get_by_test_id("token-form")
        expect(form).to_be_visible()
        page.get_by_label("API token").fill("not-a-token-of-this-node")
        page.get_by_role("button", name="Use token").click()
        expect(form).to_contain_text("The token was not accepted")
        shots.take(page, "token")

        page.get_by_label("API token").fill(CLIENT)
        page.get_by_role("button", name="Use token").click()
        expect(page.get_by_text("No flows yet.")).to_be_visible()
        assert page.evaluate("sessionStorage.getItem('dwasm.console.token')") == CLIENT

        # The cluster view needs the admin scope: the 403 problem is shown, with a way out.
        page.get_by_role("link", name="Cluster", exact=True).click()
        banner = page.get_by_test_id("error-banner")
        expect(banner).to_contain_text("403")
        expect(banner).to_contain_text("this token lacks the 'admin' scope")
        shots.take(page, "forbidden")
        banner.get_by_role("button", name="Use another token").click()
        page.get_by_label("API token").fill(ADMIN)
        page.get_by_role("button", name="Use token").click()
        expect(page.get_by_test_id("shard-grid").locator(".shard")).to_have_count(256)

        page.reload()  # the token lives as long as the tab
        expect(page.get_by_test_id("shard-grid").locator(".shard")).to_have_count(256)
        page.get_by_role("button", name="forget").click()
        expect(page.get_by_test_id("token-form")).to_be_visible()


# --------------------------------------------------------------------------------------------
# Through any node of a cluster

CLUSTER_SHARDS = 8


@pytest.fixture
def two_nodes(etcd_server: Any, database_url: str, spawn_server: Any) -> list[str]:
    """Two ``dwasm serve`` processes (n0, n1) sharing one etcd and one database, once every
    shard has an owner and both nodes route with the same map; their URLs."""
    urls, _ = start_two_nodes(spawn_server, etcd_server.endpoint, database_url,
                              shards=CLUSTER_SHARDS)
    return urls


def test_console_works_through_any_node_of_a_cluster(two_nodes: list[str], page: Any,
                                                     shots: Shots) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=WAIT_MS)
    n0, n1 = two_nodes
    view = httpx.get(f"{n1}/v1/cluster", timeout=10).json()
    owner = [a["owner"] for a in view["assignments"]]
    # A flow that n0 owns, watched and signalled through n1 (which forwards the signal).
    flow_id = next(f"console-{i}" for i in range(1000)
                   if owner[shard_of(f"console-{i}", CLUSTER_SHARDS)] == "n0")
    with httpx.Client(base_url=n0, timeout=30) as api, shots.on_failure(page):
        start(api, upload(api, wat(COUNTER_WAT)), id=flow_id)
        wait_for(api, flow_id, ("waiting",))

        page.goto(f"{n1}/ui#/flows/{flow_id}")
        expect(page.get_by_test_id("flow-status")).to_have_text("waiting")
        for sent in range(1, 4):
            page.get_by_role("button", name="Send").click()
            expect(page.locator("circle.tl-event[data-type=signal]")).to_have_count(sent)
        expect(page.get_by_test_id("flow-status")).to_have_text("completed")
        expect(page.get_by_test_id("stdout")).to_have_text("hi\n")
        checkpoints = [e["data"].get("node") for e in api.get(
            f"/v1/flows/{flow_id}/events").json()["items"] if e["type"] == "checkpoint"]
        assert checkpoints and set(checkpoints) == {"n0"}, checkpoints

        page.get_by_role("link", name="Cluster", exact=True).click()
        expect(page.get_by_test_id("members-table").locator("tbody tr")).to_have_count(2)
        expect(page.get_by_test_id("members-table")).to_contain_text("n1 (this node)")
        expect(page.get_by_test_id("map-version")).to_have_text(str(view["version"]))
        grid = page.get_by_test_id("shard-grid")
        expect(grid.locator(".shard")).to_have_count(CLUSTER_SHARDS)
        expect(grid.locator(".shard.owner-0")).to_have_count(owner.count("n0"))
        expect(grid.locator(".shard.owner-1")).to_have_count(owner.count("n1"))
        shots.take(page, "cluster")
