"""Generate `pipeline/adapters/avro/fast.py`; compile it and the pure core with mypyc where it can.

The hot path's Avro (a CDR read, a charge and its events written, per call) is code
generated from each schema (`pipeline/adapters/avro/generate.py`); the codec compiles the
same code with `exec` at start-up for any schema. The pure core (`processors/`, the modules
`processors.native.COMPILED` names) is compiled with `fast.py` as one mypyc group: in one
group, the generated charge writer reads a compiled `Charge`'s attributes directly.

The build goes to directories named by the digest of the sources compiled
(`processors/_build/DIGEST/`, `pipeline/adapters/avro/_build/DIGEST/`): `processors.native`
puts on the import path only the build of the sources as they are, so a stale build is
never run (an edit makes another digest), and the sources run until the next build.

    python -m pipeline.dev.build           regenerate fast.py, compile the group, say which
    python -m pipeline.dev.build --check   fail if fast.py or schemas/fingerprints.json is
                                           not what the schemas make
    python -m pipeline.dev.build --pure    remove every compiled build (pure Python)
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from pipeline.adapters.avro.codec import fingerprints_text
from pipeline.adapters.avro.generate import FAST, fast_source
from pipeline.config import Settings
from processors import native

ROOT = native.ROOT


def builds() -> list[Path]:
    """Every build directory of the group, of any digest."""
    packages = {path.parent for path in native.sources().values()}
    return [d for p in sorted(packages) for d in sorted((p / native.BUILDS).glob("*")) if d.is_dir()]


def remove_builds() -> None:
    for d in builds():
        shutil.rmtree(d)
    # the in-place layout of earlier versions: extensions beside the sources
    for legacy in [*native.HERE.glob("*.so"), *(ROOT / "pipeline" / "adapters").glob("avro_fast*.so")]:
        legacy.unlink()
    (native.HERE / ".native.sha256").unlink(missing_ok=True)
    shutil.rmtree(ROOT / "build" / "mypyc", ignore_errors=True)


def _cannot_compile() -> str | None:
    """Why nothing can be compiled here, or None."""
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        return f"pure Python (no C compiler: {cc} not found)"
    try:
        import mypyc  # noqa: F401
    except ImportError:
        return "pure Python (mypyc is not installed)"
    return None


def compile_core() -> str:
    """mypyc-compile the pure core and its companions (fast.py), one group, into the build
    directories of their digest; returns what was done, in words."""
    if why := _cannot_compile():
        return why
    digest = native.sources_digest()
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    with tempfile.TemporaryDirectory(prefix="callcharge-mypyc-") as out:
        args = ["-m", "pipeline.dev.build", "--mypyc-setup", "build_ext", "--build-lib", out]
        proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)
        built = Path(out)
        shared = list((built / "processors").glob("_native__mypyc*" + suffix))
        wanted = [built / Path(*m.split(".")).with_suffix(suffix) for m in native.sources()]
        if proc.returncode != 0 or not shared or not all(p.exists() for p in wanted):
            remove_builds()  # nothing half-built or older stays to warn about
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
            return "pure Python (mypyc failed: " + " | ".join(tail) + ")"
        remove_builds()
        for module, path in zip(native.sources(), wanted, strict=True):
            target = native.build_dir(module, digest)
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / path.name)
        shutil.copy2(shared[0], native.HERE / native.BUILDS / digest / shared[0].name)
    return f"compiled with mypyc: {len(native.sources())} modules, build {digest}"


def _mypyc_setup(script_args: list[str]) -> None:
    """The setuptools build compile_core runs (in its own process, from the project root)."""
    from mypyc.build import mypycify
    from setuptools import setup

    modules = [str(path.relative_to(ROOT)) for path in native.sources().values()]
    setup(
        name="callcharge-core",
        ext_modules=mypycify(modules, group_name=native.SHARED_LIB, opt_level="3"),
        script_args=script_args,
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--mypyc-setup"]:
        _mypyc_setup(argv[1:])
        return 0
    ap = argparse.ArgumentParser(prog="python -m pipeline.dev.build", description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail if fast.py or schemas/fingerprints.json is stale")
    ap.add_argument("--pure", action="store_true", help="remove every compiled build")
    args = ap.parse_args(argv)
    source = fast_source(Settings().schemas_dir)
    prints = Settings().schemas_dir / "fingerprints.json"
    table = fingerprints_text(Settings().schemas_dir)
    if args.check:
        stale = [str(path) for path, text in ((FAST, source), (prints, table)) if path.read_text() != text]
        for path in stale:
            print(f"{path} is stale: run python -m pipeline.dev.build", file=sys.stderr)
        return 1 if stale else 0
    if not FAST.exists() or FAST.read_text() != source:
        FAST.write_text(source)
        print(f"wrote {FAST}")
    if not prints.exists() or prints.read_text() != table:
        prints.write_text(table)
        print(f"wrote {prints}")
    if args.pure:
        remove_builds()
        print("Avro hot path: pure Python")
        print("Charging core: pure Python")
        return 0
    print("Charging core and Avro hot path (one group): " + compile_core())
    return 0


if __name__ == "__main__":
    sys.exit(main())
