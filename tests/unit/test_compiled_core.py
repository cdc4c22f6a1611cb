"""The pure core compiled with mypyc and the same core run as Python charge alike.

`make setup` compiles processors/ where a C compiler exists (processors/native.py says
which build runs). These tests hold the two builds together: every `__init__` written out
for mypyc is exactly its fields, both builds rate the same traffic to the same repr, the
whole unit suite passes on the Python source too, and a build older than its sources is
never used.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from processors import native

# generated traffic starts here whatever the day (a test that needs a date pins it)
PINNED = datetime(2026, 11, 2, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "processors"
COMPILED = native.mode() == "compiled with mypyc"
needs_compiled = pytest.mark.skipif(not COMPILED, reason=f"the core runs {native.mode()} here: nothing to compare")


def _dataclass_frozen(node: ast.ClassDef) -> bool | None:
    """True/False for @dataclass(frozen=...), None when not a dataclass."""
    for d in node.decorator_list:
        if isinstance(d, ast.Name) and d.id == "dataclass":
            return False
        if isinstance(d, ast.Call) and isinstance(d.func, ast.Name) and d.func.id == "dataclass":
            return any(k.arg == "frozen" and ast.literal_eval(k.value) is True for k in d.keywords)
    return None


def _written() -> list[tuple[str, ast.ClassDef, set[str]]]:
    """(module, class, the names its module passes to written_inits) for every class of
    the core that writes its own __init__."""
    out = []
    for path in sorted(CORE.glob("*.py")):
        tree = ast.parse(path.read_text())
        listed: set[str] = set()
        for st in tree.body:
            call = st.value if isinstance(st, ast.Expr) else None
            if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "written_inits":
                listed |= {a.id for a in call.args if isinstance(a, ast.Name)}
        for node in tree.body:
            if (
                isinstance(node, ast.ClassDef)
                and _dataclass_frozen(node) is not None
                and any(isinstance(b, ast.FunctionDef) and b.name == "__init__" for b in node.body)
            ):
                out.append((path.stem, node, listed))
    return out


WRITTEN = _written()


def test_the_hot_records_write_their_init() -> None:
    names = {node.name for _, node, _ in WRITTEN}
    assert {"Cdr", "Charge", "Segment", "LotDraw", "Event", "Route", "NumberInfo", "Lot", "Origin"} <= names


@pytest.mark.parametrize("module,node,listed", WRITTEN, ids=[f"{m}.{n.name}" for m, n, _ in WRITTEN])
def test_a_written_init_is_exactly_the_fields(module: str, node: ast.ClassDef, listed: set[str]) -> None:
    frozen = _dataclass_frozen(node)
    fields = []
    for st in node.body:
        if isinstance(st, ast.AnnAssign) and isinstance(st.target, ast.Name):
            default = None if st.value is None else st.value
            if isinstance(default, ast.Call) and ast.unparse(default.func) == "field":
                (kw,) = default.keywords  # only field(default=...): a factory has no written equivalent
                assert kw.arg == "default", f"{node.name}.{st.target.id}: field({kw.arg}=...)"
                default = kw.value
            fields.append((st.target.id, ast.unparse(st.annotation), None if default is None else ast.unparse(default)))
    init = next(b for b in node.body if isinstance(b, ast.FunctionDef) and b.name == "__init__")
    args = init.args.args[1:]
    defaults: list[ast.expr | None] = [None] * (len(args) - len(init.args.defaults)) + list(init.args.defaults)
    params = [
        (a.arg, ast.unparse(a.annotation) if a.annotation else "", None if d is None else ast.unparse(d))
        for a, d in zip(args, defaults, strict=True)
    ]
    assert params == fields, f"{node.name}.__init__ is not its fields, in order, with their defaults"
    assert not (init.args.kwonlyargs or init.args.vararg or init.args.kwarg)
    stores = [
        ast.unparse(st) for st in init.body if not (isinstance(st, ast.Expr) and isinstance(st.value, ast.Constant))
    ]
    assert stores == [f"self.{name} = {name}" for name, _, _ in fields], f"{node.name}.__init__ stores more or less"
    if frozen:  # run as Python, its own __init__ would trip the frozen __setattr__
        assert node.name in listed, f"{module}.py: written_inits({node.name}) is missing"


def _samples() -> list[Any]:
    """One real instance of every hot record, from rating traffic."""
    from pipeline.adapters.files import load_rates
    from pipeline.config import Settings
    from pipeline.dev import traffic
    from processors.admission import Origin
    from processors.charging import prepare, route
    from processors.engine import Engine
    from processors.inputs import cdr_from_dict, tenant_from_dict
    from processors.model import Cdr
    from processors.numbers import analyze

    tenants = traffic.tenants(6, seed=31, prefix="rec", start=PINNED)
    books = {t["tenant_id"]: prepare(tenant_from_dict(t)) for t in tenants}
    engine = Engine([tenant_from_dict(t) for t in tenants], load_rates(Settings().rates_file))
    found: dict[str, Any] = {"Origin": Origin(3, 41), "NumberInfo": analyze("+442071234567")}
    for row in traffic.cdrs(tenants, 600, seed=32, start=PINNED + timedelta(days=2)):
        cdr = cdr_from_dict(row)
        assert isinstance(cdr, Cdr)
        found.setdefault("Cdr", cdr)
        found.setdefault("Route", route(books[cdr.tenant_id], cdr))
        done = engine.process(cdr)
        if done is None:
            continue
        charge, events = done
        found.setdefault("Charge", charge)
        for seg in charge.segments:
            found.setdefault("Segment", seg)
            for draw in seg.lots:
                found.setdefault("LotDraw", draw)
        for event in events:
            found.setdefault("Event", event)
    for state in engine.states.values():
        for lot in state.lots:
            found.setdefault("Lot", lot)
    return [found[k] for k in sorted(found)]


SAMPLES = _samples()


@pytest.mark.parametrize("obj", SAMPLES, ids=[type(o).__name__ for o in SAMPLES])
def test_a_hot_record_builds_compares_and_stays_frozen(obj: Any) -> None:
    cls = type(obj)
    fields = dataclasses.fields(obj)
    values = [getattr(obj, f.name) for f in fields]
    assert cls(*values) == obj
    assert cls(**{f.name: v for f, v in zip(fields, values, strict=True)}) == obj
    assert hash(cls(*values)) == hash(obj)
    assert dataclasses.replace(obj) == obj
    assert repr(cls(*values)) == repr(obj)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(obj, fields[0].name, values[0])
    with pytest.raises(TypeError):
        cls(*values, None)
    required = [f for f in fields if f.default is dataclasses.MISSING]
    if required:
        with pytest.raises(TypeError):
            cls()
    partial = cls(*values[: len(required)])
    for f in fields[len(required) :]:
        assert getattr(partial, f.name) == f.default, f"{cls.__name__}.{f.name} default"


def rated() -> str:
    """A digest of what the core makes of varied traffic: every charge, event and refusal."""
    from pipeline.adapters.files import load_rates
    from pipeline.config import Settings
    from pipeline.dev import traffic
    from processors.engine import Engine
    from processors.inputs import Rejected, cdr_from_dict, tenant_from_dict

    start = datetime(2026, 10, 1, tzinfo=UTC)  # the same traffic in both processes
    tenants = traffic.tenants(25, seed=41, prefix="cmp", start=start)
    engine = Engine([tenant_from_dict(t) for t in tenants], load_rates(Settings().rates_file))
    h = hashlib.sha256()
    for row in traffic.cdrs(tenants, 8000, seed=42, start=start + timedelta(days=1)):
        cdr = cdr_from_dict(row)
        h.update(repr(cdr).encode())
        if not isinstance(cdr, Rejected):
            h.update(repr(engine.admit_and_charge(cdr)).encode())
    for tid in sorted(engine.states):
        h.update(repr(engine.states[tid]).encode())
    return h.hexdigest()


def _run_pure(code: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    prelude = "from processors import native\n"
    return subprocess.run(
        [sys.executable, "-X", f"{native.ASK_SOURCE}=source", "-c", prelude + code],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


@needs_compiled
def test_the_python_source_rates_exactly_as_the_compiled_core() -> None:
    proc = _run_pure("from tests.unit.test_compiled_core import rated\nprint(native.mode())\nprint(rated())")
    assert proc.returncode == 0, proc.stderr
    mode, digest = proc.stdout.split("\n")[:2]
    assert mode == "pure Python (asked: -X callcharge_core=source)"
    assert digest == rated()


@needs_compiled
def test_the_generated_avro_follows_the_core_to_its_source() -> None:
    """avro_fast is compiled in the core's group: when the core runs from source, so does
    it (compiled code of the group must never meet the source's classes)."""
    proc = _run_pure("from pipeline.adapters.avro import codec, fast\nprint(fast.__file__)\nprint(codec.avro_mode())")
    assert proc.returncode == 0, proc.stderr
    path, mode = proc.stdout.split("\n")[:2]
    assert path == str(ROOT / "pipeline" / "adapters" / "avro" / "fast.py")
    assert mode.startswith("generated Python")


@needs_compiled
def test_the_unit_suite_passes_on_the_python_source() -> None:
    args = ["-q", "-p", "no:cacheprovider", "tests/unit", "--ignore=tests/unit/test_newcomer.py"]  # no core there
    proc = _run_pure(f"import sys, pytest\nsys.exit(pytest.main({args!r}))")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]


@needs_compiled
def test_a_compiled_core_older_than_its_sources_is_not_used(tmp_path: Path) -> None:
    shutil.copytree(CORE, tmp_path / "processors", ignore=shutil.ignore_patterns("__pycache__"))
    for source in native.COMPANIONS.values():  # compiled in the same group: in its digest
        package = (ROOT / source).parent
        while (package / "__init__.py").exists() and package != ROOT:  # the package and its parents
            target = tmp_path / package.relative_to(ROOT)
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(package / "__init__.py", target / "__init__.py")
            package = package.parent
        shutil.copy(ROOT / source, tmp_path / source)
        shutil.copytree((ROOT / source).parent / native.BUILDS, (tmp_path / source).parent / native.BUILDS)
    probe = (
        "import processors.native as n, processors.charging as c, pipeline.adapters.avro.fast as f\n"
        "print(n.mode()); print(c.__file__); print(f.__file__)"
    )

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", probe],
            cwd=tmp_path,
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=120,
        )

    fresh = run()
    assert fresh.returncode == 0, fresh.stderr
    assert fresh.stdout.split("\n")[:1] == ["compiled with mypyc"]
    assert fresh.stdout.split("\n")[1].endswith(".so") and fresh.stdout.split("\n")[2].endswith(".so")

    with (tmp_path / "processors" / "charging.py").open("a") as f:
        f.write("\n# an edit made after make setup\n")
    stale = run()
    assert stale.returncode == 0, stale.stderr
    mode, path, fast = stale.stdout.split("\n")[:3]
    assert mode == "pure Python (the compiled core is stale: run make setup)"
    assert path == str(tmp_path / "processors" / "charging.py")
    assert fast == str(tmp_path / "pipeline" / "adapters" / "avro" / "fast.py")  # it follows the core
    assert "the compiled core is not of these sources" in stale.stderr


def test_without_a_c_compiler_the_core_build_says_pure_python_and_leaves_the_tree_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pipeline.dev import build

    before = build.builds()
    monkeypatch.setattr(build.shutil, "which", lambda _: None)
    assert build.compile_core().startswith("pure Python (no C compiler")  # fast.py is in its group
    assert build.builds() == before
