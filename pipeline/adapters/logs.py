"""How callcharge logs: `text` for a person at a terminal, `json` (one object per line) for a
log pipeline (Loki, Elasticsearch, Cloud Logging). Chosen by CALLCHARGE_LOG_FORMAT or
LOG_FORMAT; the level by CALLCHARGE_LOG_LEVEL.

A JSON line holds `ts` (UTC, ISO 8601, milliseconds), `level`, `logger`, `message`, `pid`,
and `exc` (the traceback) when there is one. The message is the same text the `text`
format prints, so a search written for one finds the other."""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process or os.getpid(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, ensure_ascii=False, default=str)


def formatter(kind: str) -> logging.Formatter:
    return JsonFormatter() if kind == "json" else logging.Formatter(TEXT_FORMAT)


def configure(level: str, kind: str) -> None:
    """The root logger on stderr in `kind`; every library logging through `logging` (faust,
    aiohttp, librdkafka via its logger) comes out the same way."""
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(kind))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


def dict_config(level: str) -> dict[str, Any]:
    """JSON lines on stderr as a `logging.config.dictConfig` (for faust's worker, which
    configures logging itself when it starts)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "root": {"level": level.upper(), "handlers": ["default"]},
    }
