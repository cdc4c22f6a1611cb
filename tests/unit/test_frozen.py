"""Every @frozen record builds exactly as the plain frozen dataclass would, and stays frozen.

The pure core's hot records write their `__init__` out for mypyc instead: see
tests/unit/test_compiled_core.py."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil

import pytest

import pipeline
import processors
from processors.frozen import frozen


def _records() -> list[type]:
    found = {}
    for package in (processors, pipeline):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if info.ispkg:
                continue
            module = importlib.import_module(info.name)
            for _, obj in inspect.getmembers(module, inspect.isclass):
                if hasattr(obj, "__dataclass_init__"):
                    found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [found[k] for k in sorted(found)]


RECORDS = _records()


def test_the_runtimes_hot_records_are_frozen_records() -> None:
    names = {cls.__name__ for cls in RECORDS}
    assert "StoredCall" in names  # every redelivered call is unpacked into one


@pytest.mark.parametrize("cls", RECORDS, ids=[c.__name__ for c in RECORDS])
def test_builds_like_the_dataclass(cls: type) -> None:
    fields = dataclasses.fields(cls)
    values = [object() for _ in fields]

    def reference(*args: object, **kwargs: object) -> object:
        obj = object.__new__(cls)
        cls.__dataclass_init__(obj, *args, **kwargs)  # type: ignore[attr-defined]
        return obj

    def state(obj: object) -> list[object]:
        return [getattr(obj, f.name) for f in fields]

    # positional, keyword, and with every default left out
    assert state(cls(*values)) == state(reference(*values)) == values
    named = {f.name: v for f, v in zip(fields, values, strict=True)}
    assert state(cls(**named)) == values
    required = {f.name: v for f, v in zip(fields, values, strict=True) if f.default is dataclasses.MISSING}
    assert state(cls(**required)) == state(reference(**required))
    # the same mistakes fail the same way
    for args, kwargs in (((), {}), ((*values, 1), {}), ((), {**named, "nope": 1})):
        if not args and not kwargs and not required:
            continue
        with pytest.raises(TypeError):
            reference(*args, **kwargs)
        with pytest.raises(TypeError):
            cls(*args, **kwargs)
    # still frozen, still a value
    obj = cls(*values)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(obj, fields[0].name, 1)
    assert obj == cls(*values)
    assert dataclasses.replace(obj) == obj


def test_refuses_what_it_cannot_build_exactly() -> None:
    with pytest.raises(TypeError, match="factory"):

        @frozen
        class WithFactory:
            items: list[int] = dataclasses.field(default_factory=list)

    with pytest.raises(TypeError, match="__post_init__"):

        @frozen
        class WithPostInit:
            x: int

            def __post_init__(self) -> None:
                pass
