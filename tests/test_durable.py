"""The durability promise of `dwasm run --state`: a run killed with SIGKILL at any moment and
continued with `dwasm resume` (again and again) leaves stdout, stderr, the files the program wrote
in its preopened directory, and the exit status byte-identical to one uninterrupted run."""

from __future__ import annotations

import filecmp
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CRUNCH = ROOT / "tests" / "durable" / "crunch.wasm"


def dwasm(*args: str, stdout: Path, stderr: Path, append: bool) -> subprocess.Popen:
    mode = "ab" if append else "wb"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with open(stdout, mode) as out, open(stderr, mode) as err:
        return subprocess.Popen([sys.executable, "-m", "app.cli", *args], stdout=out,
                                stderr=err, stdin=subprocess.DEVNULL, env=env, cwd=ROOT)


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file()}


def test_sigkill_and_resume_match_an_uninterrupted_run(tmp_path: Path) -> None:
    rounds = "600"  # enough work for several kills whichever tier runs it
    ref_dir, dur_dir = tmp_path / "ref", tmp_path / "dur"
    ref_dir.mkdir()
    dur_dir.mkdir()
    ref = dwasm("run", "--dir", f"{ref_dir}::/data", str(CRUNCH), rounds,
                stdout=tmp_path / "ref.out", stderr=tmp_path / "ref.err", append=False)
    ref_code = ref.wait(timeout=300)

    state = tmp_path / "state"
    rng = random.Random(1234)
    proc = dwasm("run", "--checkpoint-interval", "0.1", "--state", str(state), "--dir",
                 f"{dur_dir}::/data", str(CRUNCH), rounds,
                 stdout=tmp_path / "dur.out", stderr=tmp_path / "dur.err", append=False)
    kills = 0
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            code = proc.wait(timeout=rng.uniform(0.4, 1.2))
            break  # finished on its own
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
        proc = dwasm("resume", str(state), stdout=tmp_path / "dur.out",
                     stderr=tmp_path / "dur.err", append=True)
    else:
        proc.kill()
        pytest.fail("the durable run did not finish in time")

    assert kills >= 3, "the run finished too fast to be killed several times"
    assert code == ref_code != 0
    assert (tmp_path / "dur.out").read_bytes() == (tmp_path / "ref.out").read_bytes()
    assert (tmp_path / "dur.err").read_bytes() == (tmp_path / "ref.err").read_bytes()
    assert tree(dur_dir) == tree(ref_dir)
    assert not filecmp.dircmp(dur_dir, ref_dir).diff_files

    # Resuming a finished run reports the same status again and writes nothing more.
    again = dwasm("resume", str(state), stdout=tmp_path / "dur.out", stderr=tmp_path / "dur.err",
                  append=True)
    assert again.wait(timeout=60) == ref_code
    assert (tmp_path / "dur.out").read_bytes() == (tmp_path / "ref.out").read_bytes()


def test_resume_refuses_a_directory_in_use_and_a_missing_one(tmp_path: Path) -> None:
    missing = dwasm("resume", str(tmp_path / "nope"), stdout=tmp_path / "o", stderr=tmp_path / "e",
                    append=False)
    assert missing.wait(timeout=60) == 3
    assert "not a" in (tmp_path / "e").read_text()


def test_run_refuses_to_overwrite_a_state_directory(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = dwasm("run", "--state", str(state), "--invoke", "fib",
                  str(ROOT / "examples" / "fib.wasm"), "10",
                  stdout=tmp_path / "o", stderr=tmp_path / "e", append=False)
    assert first.wait(timeout=60) == 0
    assert (tmp_path / "o").read_text() == "55\n"
    second = dwasm("run", "--state", str(state), "--invoke", "fib",
                   str(ROOT / "examples" / "fib.wasm"), "10",
                   stdout=tmp_path / "o2", stderr=tmp_path / "e2", append=False)
    assert second.wait(timeout=60) == 3
    assert "already holds a run" in (tmp_path / "e2").read_text()


def test_checkpoint_over_the_snapshot_limit_is_a_clear_error(tmp_path: Path) -> None:
    proc = dwasm("run", "--state", str(tmp_path / "state"), "--max-snapshot-bytes", "100000",
                 "--dir", f"{tmp_path}::/data", str(CRUNCH), "3",
                 stdout=tmp_path / "o", stderr=tmp_path / "e", append=False)
    assert proc.wait(timeout=60) == 8
    err = (tmp_path / "e").read_text()
    assert err.startswith("error: cannot checkpoint: snapshot of") and "100000" in err
