"""JSON as every input of ours reads it (CDR lines, Graph responses, tenants files, token
files, API bodies): the standard parser, plus two refusals it does not make.

* **A nesting limit** (`MAX_DEPTH`): a line like `[[[[...]]]]` under the size cap would
  otherwise end the command in a RecursionError (or the API in a 500). A CDR is 2 levels
  deep, a Graph response 4, a tenants file 5; 32 leaves room and refuses nothing real.
* **Duplicate keys**: `{"amount": "60", "amount": "1000000000"}` is refused, not read as
  its last value (a proxy that checked the first key would be bypassed).

Both raise `StrictJsonError`, a `json.JSONDecodeError`, so every caller's handling of bad
JSON handles these too, with a message that says which rule.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 32
# What changes the depth or the string state: brackets, quotes and the escapes inside strings.
_TOKENS = re.compile(r'[\[\]{}"\\]')


class StrictJsonError(json.JSONDecodeError):
    """JSON the standard parser would read but ours refuses (too deep, a key twice)."""


def _depth_ok(text: str) -> None:
    if text.count("[") + text.count("{") <= MAX_DEPTH:  # the usual case: nothing to scan
        return
    depth = 0
    in_string = False
    escaped = -1  # the position of the character an escape swallows
    for m in _TOKENS.finditer(text):
        at, ch = m.start(), m.group()
        if at == escaped:
            continue
        if in_string:
            if ch == "\\":
                escaped = at + 1
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise StrictJsonError(f"nested deeper than {MAX_DEPTH} levels", text, at)
        elif ch in "]}":
            depth -= 1


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise StrictJsonError(f"key {key[:40]!r} appears twice in one object", "", 0)
        out[key] = value
    return out


def loads(text: str) -> Any:
    """`json.loads(text)`, refusing nesting deeper than MAX_DEPTH and duplicate keys."""
    _depth_ok(text)
    return json.loads(text, object_pairs_hook=_no_duplicates)
