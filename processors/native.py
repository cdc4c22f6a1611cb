"""Which build of the pure core runs: mypyc-compiled, or the Python source beside it.

`make setup` (`python -m pipeline.dev.build`) compiles the modules in COMPILED with mypyc
where a C compiler exists: one extension per module plus their shared library
(`processors/_native__mypyc*.so`), and `processors/.native.sha256`, the digest of the
sources it compiled. Python prefers an extension to the source beside it, so an extension
left behind by an edit would run yesterday's rules: `processors/__init__.py` calls
`check()` before any module of the core loads, and when the sources differ from what was
compiled, the core runs from source (with a warning) until the next `make setup`.
`use_source()` asks for the source on purpose (the test that compares the two builds).
This module and `errors.py`, `frozen.py` and `__init__.py` are never compiled.

COMPANIONS are modules outside the core compiled into the same group: the generated Avro
code (`pipeline/adapters/avro_fast.py`) reads the core's `Charge` attribute by attribute,
and only code compiled with a class reads its attributes directly. They follow the core:
their sources are in the digest, and when the core runs from source they do too (compiled
code of the group must never meet the source's classes). `pipeline/adapters/__init__.py`
imports this package first, so the check runs before any companion loads.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import sysconfig
import warnings
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
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
# module -> its source, relative to the project root (HERE.parent)
COMPANIONS = {"pipeline.adapters.avro_fast": "pipeline/adapters/avro_fast.py"}
DIGEST_FILE = HERE / ".native.sha256"
SHARED_LIB = "processors._native"  # mypyc's group name: the library is processors/_native__mypyc*.so

_mode = "pure Python (not compiled: run make setup where a C compiler exists)"


def sources() -> dict[str, Path]:
    """Every module of the group (dotted name) and its source file."""
    out = {f"processors.{name}": HERE / f"{name}.py" for name in COMPILED}
    out.update({module: HERE.parent / path for module, path in COMPANIONS.items()})
    return out


def sources_digest() -> str:
    h = hashlib.sha256()
    for module, path in sources().items():
        name = module.removeprefix("processors.")  # the core's entries as they always were
        h.update(name.encode() + b"\0" + (path.read_bytes() if path.exists() else b"") + b"\0")
    return h.hexdigest()


def extensions() -> list[Path]:
    """The group's extension modules present beside their sources."""
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    return [p for p in (path.with_name(path.stem + suffix) for path in sources().values()) if p.exists()]


class _SourceFinder:
    """Finds the core's modules as their .py source, ahead of the extensions beside them."""

    def find_spec(self, name: str, path: Sequence[str] | None, target: ModuleType | None = None) -> ModuleSpec | None:
        source = sources().get(name)
        return importlib.util.spec_from_file_location(name, source) if source is not None else None


def use_source(reason: str) -> None:
    """Run the core from its Python source from here on (before any of it is imported)."""
    global _mode
    loaded = [m for m in sources() if m in sys.modules]
    if loaded:
        raise RuntimeError(f"use_source() after {loaded[0]} was imported")
    if not any(isinstance(f, _SourceFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourceFinder())
    _mode = f"pure Python ({reason})"


def check() -> None:
    """Called by processors/__init__.py: use the extensions only if they are of these sources."""
    global _mode
    if not extensions():
        return
    recorded = DIGEST_FILE.read_text().strip() if DIGEST_FILE.exists() else ""
    if recorded != sources_digest():
        warnings.warn(
            "processors/: the compiled core is not of these sources (edited since `make setup`?); "
            "running the Python source",
            RuntimeWarning,
            stacklevel=2,
        )
        use_source("the compiled core is stale: run make setup")
        return
    _mode = "compiled with mypyc"


def mode() -> str:
    """What runs, in words: "compiled with mypyc" or "pure Python (why)"."""
    return _mode
