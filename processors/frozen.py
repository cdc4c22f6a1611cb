"""Fast construction of frozen records, compiled or not.

`@frozen` (the runtime's records, pipeline/): a frozen, slotted dataclass whose `__init__`
costs about half as much. A frozen dataclass's generated `__init__` stores each field
through `object.__setattr__` (a global lookup and a bound call per field), so a 21-field
`Charge` took 4.4 us to build against 1 us for a mutable one. With `__slots__` every field
is a member descriptor; calling its `__set__` directly is the same store without the
detour. Everything else is the dataclass's own: `fields()`, `__eq__`, `__hash__`,
`__repr__`, `replace()`, and FrozenInstanceError on assignment.

`written_inits` (the pure core's hot records, processors/): mypyc compiles processors/
where a C compiler exists, and it makes native classes only of classes decorated with
`dataclasses.dataclass` itself, without `slots` (docs/benchmark.md). Those records are
`@dataclass(frozen=True)` with an `__init__` written out, which mypyc compiles to native
stores; run as plain Python, `written_inits` swaps in an equivalent one.
tests/unit/test_frozen.py and tests/unit/test_compiled_core.py hold both to the plain dataclass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from types import FunctionType
from typing import Any, TypeVar, dataclass_transform

T = TypeVar("T")


@dataclass_transform(frozen_default=True)
def frozen(cls: type[T]) -> type[T]:
    dc = dataclasses.dataclass(frozen=True, slots=True)(cls)
    fast = _generated_init(dc)
    dc.__dataclass_init__ = dc.__init__  # type: ignore[attr-defined]  # kept for the equivalence test
    dc.__init__ = fast  # type: ignore[method-assign]
    return dc


def _generated_init(cls: type, via_dict: bool = False) -> Callable[..., None]:
    """An `__init__` equal to the dataclass's that stores each field past the frozen
    `__setattr__`: through the slot's member descriptor (@frozen), or into the instance's
    `__dict__` (a record with a written `__init__`, run as plain Python)."""
    params, body = ["self"], ["    d = self.__dict__"] if via_dict else []
    namespace: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init or f.kw_only or f.default_factory is not dataclasses.MISSING:
            raise TypeError(f"@frozen does not handle field {cls.__name__}.{f.name} (init/kw_only/factory)")
        if f.default is dataclasses.MISSING:
            params.append(f.name)
        else:
            namespace[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
        if via_dict:
            body.append(f"    d[{f.name!r}] = {f.name}")
        else:
            namespace[f"_set_{f.name}"] = getattr(cls, f.name).__set__
            body.append(f"    _set_{f.name}(self, {f.name})")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"@frozen does not handle {cls.__name__}.__post_init__")
    source = f"def __init__({', '.join(params)}):\n" + ("\n".join(body) or "    pass")
    tag = "pure" if via_dict else "frozen"
    exec(compile(source, f"<{tag} {cls.__name__}.__init__>", "exec"), namespace)
    init: Callable[..., None] = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    return init


def written_inits(*classes: type) -> None:
    """The hot records of the pure core write their own `__init__` (`self.x = x` per field):
    mypyc compiles it to native stores, where a dataclass's generated `__init__` would stay
    interpreted Python (about 8 times slower). Run as plain Python, that `__init__` would
    trip the frozen dataclass's `__setattr__`, so each frozen class named here gets an
    equivalent one that stores into the instance's `__dict__` instead (its signature is the
    fields': tests/unit/test_compiled_core.py keeps each written `__init__` equal to them).
    Compiled, nothing changes.
    """
    for cls in classes:
        init = cls.__dict__["__init__"]
        if not isinstance(init, FunctionType):
            continue  # compiled: the native __init__ stores past __setattr__ already
        if not cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
            continue  # a mutable record: its own __init__ works as written
        cls.__init__ = _generated_init(cls, via_dict=True)  # type: ignore[misc]
