"""Which build of the pure core runs: mypyc-compiled, or the Python source beside it.

`make setup` (`python -m pipeline.dev.build`) compiles the group, the modules in COMPILED
and the COMPANIONS, with mypyc where a C compiler exists, into directories named by the
digest of the sources it compiled: `processors/_build/DIGEST/` (one extension per module
and the group's shared library, `_native__mypyc*.so`) and, for each companion, `_build/
DIGEST/` in the companion's own package.

One mechanism chooses: `processors/__init__.py` calls `choose()` before any module of the
core loads. The digest of the sources as they are now names the only build that may run;
if it exists, it goes first on the package's `__path__` and Python loads its extensions
ahead of the sources. A build of other sources (an edit since `make setup`) has another
name and is never on the path: the source runs, with a warning. No import hook, no second
check: a companion's package puts its own build of the same digest on its path
(`companion()`), so compiled code of the group never meets the source's classes.
`python -X callcharge_core=source` runs the source on purpose (the test that compares the
builds).
This module and `errors.py`, `frozen.py` and `__init__.py` are never compiled.
"""

from __future__ import annotations

import hashlib
import sys
import sysconfig
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
COMPILED = (
    "admission",
    "calendar",
    "charging",
    "control",
    "engine",
    "inputs",
    "ledger",
    "model",
    "money",
    "numbers",
    "rating",
    "replay",
    "reports",
    "rerate",
    "tables",
)
# module -> its source, relative to the project root
COMPANIONS = {"pipeline.adapters.avro.fast": "pipeline/adapters/avro/fast.py"}
SHARED_LIB = "processors._native"  # mypyc's group name: the library is _native__mypyc*.so
BUILDS = "_build"  # in each package of the group: one directory per digest
ASK_SOURCE = "callcharge_core"  # python -X callcharge_core=source: the Python source, whatever is built

_mode = "pure Python (not compiled: run make setup where a C compiler exists)"
_chosen: str | None = None  # the digest whose build runs


def sources() -> dict[str, Path]:
    """Every module of the group (dotted name) and its source file."""
    out = {f"processors.{name}": HERE / f"{name}.py" for name in COMPILED}
    out.update({module: ROOT / path for module, path in COMPANIONS.items()})
    return out


def sources_digest() -> str:
    """The name of the build of these sources: 16 hex digits of their SHA-256."""
    h = hashlib.sha256()
    for module, path in sources().items():
        h.update(module.encode() + b"\0" + (path.read_bytes() if path.exists() else b"") + b"\0")
    return h.hexdigest()[:16]


def build_dir(module: str, digest: str) -> Path:
    """Where the build `digest` keeps `module`'s extension: its package's `_build/DIGEST`."""
    return sources()[module].parent / BUILDS / digest


def extensions(digest: str) -> list[Path]:
    """The group's extension modules present in build `digest`."""
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    found = [build_dir(m, digest) / (m.rpartition(".")[2] + suffix) for m in sources()]
    return [p for p in found if p.exists()]


def choose(package_path: list[str]) -> None:
    """Called by processors/__init__.py with its `__path__`: the build of these sources
    first on it, when there is one."""
    global _mode, _chosen
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    beside = sorted(p.name for p in HERE.glob("*" + suffix))
    if beside:  # an in-place build (before _build/) would load ahead of the sources, stale or not
        raise RuntimeError(f"processors/: remove the extensions beside the sources ({beside[0]}, ...): run make setup")
    if sys._xoptions.get(ASK_SOURCE) == "source":  # an interpreter option: the core reads no environment
        _mode = f"pure Python (asked: -X {ASK_SOURCE}=source)"
        return
    builds = HERE / BUILDS
    if not builds.is_dir() or not any(builds.iterdir()):
        return
    digest = sources_digest()
    if not (builds / digest).is_dir():
        warnings.warn(
            "processors/: the compiled core is not of these sources (edited since `make setup`?); "
            "running the Python source",
            RuntimeWarning,
            stacklevel=2,
        )
        _mode = "pure Python (the compiled core is stale: run make setup)"
        return
    package_path.insert(0, str(builds / digest))
    _chosen = digest
    _mode = "compiled with mypyc"


def companion(package_path: list[str], package_dir: Path) -> None:
    """Called by a companion's package with its `__path__`: its build of the digest the
    core chose first on it (none when the core runs from source)."""
    if _chosen is not None and (package_dir / BUILDS / _chosen).is_dir():
        package_path.insert(0, str(package_dir / BUILDS / _chosen))


def mode() -> str:
    """What runs, in words: "compiled with mypyc" or "pure Python (why)"."""
    return _mode
