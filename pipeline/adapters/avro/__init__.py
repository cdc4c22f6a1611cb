"""Avro in one room: the single-object codec (`codec`), the code generator that writes a
reader and a writer per schema (`compiler`, with its primitives in `prims`), the module it
generates for the hot path (`fast`: do not edit; `python -m pipeline.dev.build` writes it
from `generate`), and the mapping between domain objects and Avro records (`records`)."""

from pathlib import Path

# `fast` is compiled in the core's group: the core chooses the build first, then this
# package follows it (processors/native.py)
from processors import native

native.companion(__path__, Path(__file__).resolve().parent)
