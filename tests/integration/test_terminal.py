"""Long commands at a terminal: a progress bar that counts what is done (records the broker
acknowledged, ledger records read), and nothing but the summary when stderr is a pipe."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.dev import traffic
from tests.integration.harness import REPO, Env

pytestmark = pytest.mark.integration


def at_terminal(env: Env, *args: str) -> tuple[int, str, str]:
    """`callcharge ARGS` with stderr on a pseudo-terminal: (exit code, stdout, what the terminal
    showed). Stdout is read after the end: a command's output here is a line or two."""
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", *args],
        cwd=REPO, env=env.environ(), stdout=subprocess.PIPE, stderr=secondary, text=True,
    )  # fmt: skip
    os.close(secondary)
    shown = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the other side closed
            break
        if not chunk:
            break
        shown += chunk
    out, _ = proc.communicate(timeout=60)
    os.close(primary)
    return proc.returncode, out, shown.decode()


def last_bar(shown: str, label: str) -> tuple[int, int, str]:
    bars = re.findall(rf"{re.escape(label)} \[[#.]{{30}}\] (\d+)/(\d+)( [^\r\n\x1b]*)?", shown)
    assert bars, shown[-500:]
    done, total, note = bars[-1]
    return int(done), int(total), note.strip()


def test_ingest_and_export_show_progress_of_what_is_done_on_a_terminal_only(env: Env, tmp_path: Path) -> None:
    tenants = traffic.tenants(3, seed=5, prefix=env.tag)
    cdrs = traffic.cdrs(tenants, 3000, seed=6)
    tfile, cfile = tmp_path / "tenants.json", tmp_path / "cdrs.jsonl"
    tfile.write_text(json.dumps(tenants))
    cfile.write_text("".join(json.dumps(c) + "\n" for c in cdrs) + "not json\n")

    code, out, shown = at_terminal(env, "tenants", "load", str(tfile))
    assert code == 0, shown
    done, total, _ = last_bar(shown, "tenants: acknowledged")
    assert done == total > 0

    code, out, shown = at_terminal(env, "ingest", str(cfile))
    assert code == 3, shown  # one row rejected
    assert f"produced {len(cdrs)} CDRs" in out
    done, total, note = last_bar(shown, "ingest: acknowledged")
    assert (done, total, note) == (len(cdrs), len(cdrs) + 1, f"({len(cdrs)} sent, 1 rejected)")
    assert "line 3001" in shown  # the rejected row, named

    piped = env.cli("ingest", str(cfile))  # stderr a pipe: the rejected row, no bar
    assert piped.returncode == 3 and "[###" not in piped.stderr and "acknowledged" not in piped.stderr

    env.worker(idle=3.0).wait(180)
    exported = tmp_path / "charges.csv"
    code, out, shown = at_terminal(
        env, "export", "charges", "--from", "2000-01-01", "--to", "2100-01-01", "--out", str(exported)
    )
    assert code == 0, shown
    done, total, _ = last_bar(shown, f"reading {env.settings.topic.charges}")
    assert done == len(cdrs) <= total  # every charge read (each call once: the second ingest's are duplicates)
    assert len(exported.read_text().splitlines()) > len(cdrs)
