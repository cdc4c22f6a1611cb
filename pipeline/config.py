"""The one place that reads the environment: a frozen Settings built from CALLCHARGE_*."""

from __future__ import annotations

import difflib
import os
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import timedelta
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

PREFIX = "CALLCHARGE_"
# Shipped as package data, so an installed callcharge runs from any directory.
SCHEMAS_DIR = Path(str(resources.files("schemas")))
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
SECRET_FIELDS = frozenset({"api_token", "smtp_password", "kafka_sasl_password", "redis_password"})
KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
REDIS_MODES = ("standalone", "cluster")
LOG_FORMATS = ("text", "json")


# CALLCHARGE_* variables that are not settings yet are not a mistake (none today).
NOT_SETTINGS: frozenset[str] = frozenset()


class UnknownSetting(UserWarning):
    """A CALLCHARGE_* environment variable that names no setting (printed once)."""


@dataclass(frozen=True)
class Topics:
    cdr: str = "cdr"
    charges: str = "charges"
    balance_events: str = "balance-events"
    dlq: str = "cdr-dlq"
    tenant_config: str = "tenant-config"
    service_state: str = "service-state"
    commands: str = "commands"
    notifications: str = "notifications"

    def prefixed(self, prefix: str) -> Topics:
        return Topics(**{f.name: prefix + getattr(self, f.name) for f in fields(self)})

    COMPACTED = ("tenant_config", "service_state")
    # The ledger (what finance reads and `callcharge rebuild` restores Redis from) and the
    # dead letters are never deleted by age or size.
    KEPT = ("charges", "balance_events", "dlq")


@dataclass(frozen=True)
class Settings:
    state_dir: Path = Path(".callcharge")
    broker_port: int = 19092
    redis_port: int = 16379
    kafka_bootstrap: str = ""  # empty: the embedded broker on broker_port
    redis_url: str = ""  # empty: the private redis-server on redis_port
    topic_prefix: str = ""
    # Kafka transport security, the same for every client (both workers, every command):
    # SSL / SASL_SSL verify the broker against kafka_ssl_ca_file (the system's CAs when
    # empty); a client certificate is sent when cert and key files are set (mutual TLS).
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = ""
    kafka_ssl_ca_file: str = ""
    kafka_ssl_cert_file: str = ""
    kafka_ssl_key_file: str = ""
    # Redis: "cluster" talks to a Redis Cluster (redis_url names any one node). TLS when the
    # URL is rediss:// (verified against redis_ca_file); an ACL user by redis_username and
    # redis_password. redis_replicas_ack > 0: every state write waits (WAIT) until that
    # many replicas hold it before the Kafka transaction commits, so a failover never
    # loses a debit the ledger already shows.
    redis_mode: str = "standalone"
    redis_username: str = ""
    redis_password: str = ""
    redis_ca_file: str = ""
    redis_cert_file: str = ""
    redis_key_file: str = ""
    redis_replicas_ack: int = 0
    cdr_partitions: int = 8
    charges_partitions: int = 8
    other_partitions: int = 4
    group_id: str = "callcharge-charging"
    transactional_id_prefix: str = "callcharge-charge"
    session_timeout_ms: int = 6000
    batch_size: int = 2000
    batch_timeout_ms: int = 50
    dedup_window_days: int = 45
    # CDR consistency: duration_s may differ from end - start by this many seconds; a call
    # may start at most this far in the future (the platforms' clocks against ours).
    duration_tolerance_s: int = 30
    clock_skew_s: int = 300
    # A lot's remainder is forfeited once its expiry is this many hours old on the clock of
    # the data (latest call end, or the control timer's wall clock): late CDRs still pay
    # with the lot that was valid when the call was made.
    allowed_lateness_h: int = 72
    minimum_purchase: str = "50"  # manual funding of a direct tenant below this is refused
    rates_file: Path = EXAMPLES_DIR / "rates.example.csv"  # example prices only: set your own card
    schemas_dir: Path = SCHEMAS_DIR
    metrics_port: int = 9400
    metrics_host: str = "127.0.0.1"  # the image sets 0.0.0.0: Prometheus scrapes from outside the container
    http_port: int = 8480
    http_host: str = "127.0.0.1"  # the control worker's API, /health and /metrics (0.0.0.0 in the image)
    api_token: str = ""  # the operator's token: write scope on every tenant
    api_tokens_file: str = ""  # tokens scoped to tenants (pipeline/control/tokens.py)
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 2525
    smtp_password: str = ""
    smtp_from: str = "callcharge@localhost"
    control_tick_s: float = 5.0
    backlog_watch_s: float = 15.0  # how often each charging worker reads the group's uncharged CDRs
    shutdown_timeout_s: float = 15.0  # the control worker ends itself this long after a stop began
    recharge_backoff_s: float = 60.0
    recharge_backoff_cap_s: float = 3600.0
    log_level: str = "INFO"
    log_format: str = "text"  # or "json": one object per line (also read from LOG_FORMAT)
    # Fault injection for the crash tests: "STEP:BATCH" kills the charging worker with
    # SIGKILL right after commit-protocol step STEP of its BATCH-th batch. Empty: off.
    crash_after: str = ""
    topics: Topics = field(default_factory=Topics)

    def __post_init__(self) -> None:
        checks = (
            ("kafka_security_protocol", KAFKA_SECURITY_PROTOCOLS),
            ("kafka_sasl_mechanism", KAFKA_SASL_MECHANISMS),
            ("redis_mode", REDIS_MODES),
            ("log_format", LOG_FORMATS),
        )
        for name, allowed in checks:
            if getattr(self, name) not in allowed:
                raise ValueError(f"{PREFIX}{name.upper()}: one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.kafka_security_protocol.startswith("SASL") and not self.kafka_sasl_username:
            raise ValueError(f"{PREFIX}KAFKA_SASL_USERNAME is required with {self.kafka_security_protocol}")

    @property
    def bootstrap(self) -> str:
        return self.kafka_bootstrap or f"127.0.0.1:{self.broker_port}"

    @property
    def lateness(self) -> timedelta:
        return timedelta(hours=self.allowed_lateness_h)

    @property
    def redis(self) -> str:
        return self.redis_url or f"redis://127.0.0.1:{self.redis_port}/0"

    @cached_property
    def topic(self) -> Topics:
        """The topic names with the prefix applied: built once per Settings (loops that
        produce per message read it per message)."""
        return self.topics.prefixed(self.topic_prefix)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read CALLCHARGE_<FIELD> variables (plus KAFKA_BOOTSTRAP / REDIS_URL)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "topics":
                continue
            raw = env.get(PREFIX + f.name.upper())
            if raw is None:
                continue
            kind = type(getattr(cls(), f.name))
            try:
                values[f.name] = kind(raw)
            except ValueError:
                raise ValueError(f"{PREFIX}{f.name.upper()}: expected {kind.__name__}, got {raw!r}") from None
        known = {PREFIX + f.name.upper() for f in fields(cls)}
        unknown = sorted(k for k in env if k.startswith(PREFIX) and k not in known and k not in NOT_SETTINGS)
        for name in unknown:  # a misspelt setting would otherwise be silently ignored
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            warnings.warn(f"{name} is not a callcharge setting and is ignored{hint}", UnknownSetting, stacklevel=2)
        if "kafka_bootstrap" not in values and env.get("KAFKA_BOOTSTRAP"):
            values["kafka_bootstrap"] = env["KAFKA_BOOTSTRAP"]
        if "redis_url" not in values and env.get("REDIS_URL"):
            values["redis_url"] = env["REDIS_URL"]
        if "log_format" not in values and env.get("LOG_FORMAT"):
            values["log_format"] = env["LOG_FORMAT"].lower()
        values.update(overrides)
        return replace(cls(), **values)

    def to_env(self, base: Mapping[str, str] | None = None, **overrides: Any) -> dict[str, str]:
        """The environment of a child process that reads back exactly these settings:
        `base` (default: ours) without any CALLCHARGE_* of its own, plus every field."""
        env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith(PREFIX)}
        env.pop("KAFKA_BOOTSTRAP", None)
        env.pop("REDIS_URL", None)
        env.pop("LOG_FORMAT", None)
        s = replace(self, **overrides)
        for f in fields(s):
            if f.name != "topics":
                env[PREFIX + f.name.upper()] = str(getattr(s, f.name))
        return env

    def masked(self) -> dict[str, Any]:
        """A dump safe for logs: secrets and URL passwords replaced."""
        out = asdict(self)
        for key in SECRET_FIELDS:
            if out.get(key):
                out[key] = "***"
        for key in ("redis_url", "kafka_bootstrap"):
            value = out.get(key) or ""
            if "@" in value and ":" in value.split("@", 1)[0]:
                scheme, rest = value.split("://", 1) if "://" in value else ("", value)
                user = rest.split("@", 1)[0].split(":", 1)[0]
                out[key] = f"{scheme}://{user}:***@{rest.split('@', 1)[1]}"
        return {k: str(v) if isinstance(v, Path) else v for k, v in out.items()}
