"""`pip install .` (a built wheel, not an editable install) into a fresh venv gives a
`callcharge` that runs from any directory: schemas, Lua, data tables and examples ship as
package data."""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_wheel_installs_into_a_fresh_venv_and_rates_a_shipped_example(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(dist), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    assert "is absent from the `packages` configuration" not in build.stderr + build.stdout
    (wheel,) = dist.glob("callcharge-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    pip = subprocess.run(
        [env_dir / "bin" / "python", "-m", "pip", "install", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert pip.returncode == 0, pip.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cli = env_dir / "bin" / "callcharge"
    examples = subprocess.run([cli, "examples", "ex"], cwd=elsewhere, capture_output=True, text=True, timeout=60)
    assert examples.returncode == 0, examples.stderr
    # no --rates: the default card is the shipped example, found inside the installed package
    rated = subprocess.run(
        [cli, "rate", "--tenants", "ex/tenants.json", "--cdrs", "ex/cdrs.jsonl"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rated.returncode == 0, rated.stderr
    lines = [json.loads(x) for x in rated.stdout.splitlines()]
    charges = [x for x in lines if "classification" in x]
    shipped = (elsewhere / "ex" / "cdrs.jsonl").read_text().splitlines()
    assert len(charges) == len(shipped) == 40 and "rated 40 calls" in rated.stderr
    # the installed package is what ran, not the repository
    where = subprocess.run(
        [env_dir / "bin" / "python", "-c", "import pipeline, schemas; print(pipeline.__file__, schemas.__file__)"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
    )
    assert str(REPO) not in where.stdout and str(env_dir) in where.stdout
