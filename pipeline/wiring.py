"""The one place clients are built: Redis, the codec, metrics, and the workers from them.

Kafka clients take their configuration from `pipeline.adapters.kafka`; what they connect to
and how long they wait is decided here, once, for every command and worker.
"""

from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING, Any, cast

import redis
from confluent_kafka.admin import AdminClient
from prometheus_client import CollectorRegistry

from pipeline.adapters.avro.codec import Codec
from pipeline.adapters.directory import TenantDirectory
from pipeline.adapters.files import load_rates
from pipeline.adapters.health import CHECK_TIMEOUT_S, Readiness
from pipeline.adapters.kafka import PREFLIGHT_LOG, client_conf, consumer, preflight, producer
from pipeline.adapters.metrics import ChargingMetrics
from pipeline.adapters.store import SPLIT_KEY, Store
from pipeline.charging.leases import TransactionLeases
from pipeline.charging.worker import ChargingWorker
from pipeline.config import Settings
from pipeline.control.clock import Clock, utc_now
from pipeline.control.gateway import SimulatedGateway
from pipeline.control.ledger_ops import LedgerOps
from pipeline.control.lifecycle import Control
from pipeline.errors import FatalError, InputError
from processors.rating import RateCard

if TYPE_CHECKING:
    import faust

# One set of Redis timeouts for every client: a command or worker never hangs on a Redis
# that stopped answering, and a dead connection is noticed within half a minute.
REDIS_SOCKET_TIMEOUT_S = 10.0
REDIS_CONNECT_TIMEOUT_S = 5.0
REDIS_HEALTH_CHECK_S = 30


def redis_client(settings: Settings, socket_timeout_s: float = REDIS_SOCKET_TIMEOUT_S) -> redis.Redis:
    """The one Redis client builder: standalone or Cluster (`redis_mode`), TLS when the URL
    is rediss:// (checked against `redis_ca_file`), an ACL user when `redis_username` is set.

    A Cluster client has the same command surface for what callcharge sends (every key of
    one tenant carries its `{tenant}` hash tag, so scripts and pipelines stay on one slot);
    it is typed as `redis.Redis` for the callers."""
    options: dict[str, Any] = {
        "socket_timeout": socket_timeout_s,
        "socket_connect_timeout": REDIS_CONNECT_TIMEOUT_S,
    }
    if settings.redis_username:
        options["username"] = settings.redis_username
    if settings.redis_password:
        options["password"] = settings.redis_password
    if settings.redis.startswith("rediss://"):
        options["ssl_cert_reqs"] = "required"
        if settings.redis_ca_file:
            options["ssl_ca_certs"] = settings.redis_ca_file
        if settings.redis_cert_file:
            options["ssl_certfile"] = settings.redis_cert_file
            options["ssl_keyfile"] = settings.redis_key_file
    if settings.redis_mode == "cluster":
        return cast(redis.Redis, redis.RedisCluster.from_url(settings.redis, **options))
    return redis.Redis.from_url(settings.redis, health_check_interval=REDIS_HEALTH_CHECK_S, **options)


def store(settings: Settings) -> Store:
    client = redis_client(settings)
    try:
        return Store(client, settings.redis_replicas_ack, settings.dedup_window_days)
    except redis.AuthenticationError as exc:  # before ConnectionError: it is one
        user = settings.redis_username or "default"
        raise FatalError(f"Redis at {_where(settings.redis)} refused user {user!r}: {exc}") from None
    except redis.ResponseError as exc:
        if "NOPERM" in str(exc):
            raise FatalError(f"Redis ACL user {settings.redis_username!r} may not run callcharge: {exc}") from None
        raise
    except redis.ConnectionError as exc:
        if "certificate" in str(exc).lower() or "ssl" in str(exc).lower():
            raise FatalError(f"Redis at {_where(settings.redis)}: TLS refused: {exc}") from None
        raise


def _where(url: str) -> str:
    """host:port of a Redis URL, never its password."""
    return url.split("://", 1)[-1].rsplit("@", 1)[-1].split("/", 1)[0]


def codec(settings: Settings) -> Codec:
    return Codec(settings.schemas_dir)


def rate_card(settings: Settings) -> RateCard:
    """The configured rate card; a card that cannot be read stops the process with why."""
    try:
        return load_rates(settings.rates_file)
    except InputError as exc:
        raise FatalError(str(exc)) from None


def readiness(settings: Settings) -> Readiness:
    """What /readyz asks: Redis answers a ping and the broker a metadata request, each
    within the check timeout (clients of their own, so a probe never waits on a batch)."""
    r = redis_client(settings, socket_timeout_s=CHECK_TIMEOUT_S)
    # its own log is dropped: the worker's clients already say when the broker is away
    admin = AdminClient(client_conf(settings, logger=PREFLIGHT_LOG, error_cb=lambda _err: None))

    def broker() -> None:
        admin.list_topics(settings.topic.cdr, timeout=CHECK_TIMEOUT_S)

    return Readiness({"redis": r.ping, "broker": broker})


def charging_worker(
    settings: Settings, registry: CollectorRegistry | None = None, worker_id: str | None = None
) -> ChargingWorker:
    """A charging worker with its clients: the transactional id is leased in Redis before
    the producer initialises transactions (which aborts a dead worker's open one)."""
    rates = rate_card(settings)
    c = codec(settings)
    s = store(settings)
    split = s.r.get(SPLIT_KEY)
    if split:
        reason = split.decode() if isinstance(split, bytes) else split
        raise FatalError(
            f"{reason}. Choose first: `callcharge stack up --fresh` (wipe Redis) or "
            "`callcharge stack up --keep-redis` (keep it), or restore the ledger topics"
        )
    worker_id = worker_id or f"{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    transactional_id = f"{settings.transactional_id_prefix}-{worker_id}"
    preflight(settings)
    leases = TransactionLeases(settings, s.r, transactional_id)
    leases.tick()  # leased before its first transaction; dead workers' ones aborted
    p = producer(settings, transactional_id)
    p.init_transactions(30)
    return ChargingWorker(
        settings,
        c,
        s,
        rates,
        ChargingMetrics(registry or CollectorRegistry()),
        TenantDirectory(settings, c, s),
        consumer(settings, settings.group_id),
        p,
        leases,
        worker_id,
    )


def control(settings: Settings, clock: Clock = utc_now) -> Control:
    c = codec(settings)
    s = store(settings)
    return Control(settings, c, TenantDirectory(settings, c, s), LedgerOps(s, c), s.r, SimulatedGateway(s.r), clock)


def control_app(settings: Settings, clock: Clock = utc_now) -> faust.App:
    from pipeline.control.app import build_app

    rates = rate_card(settings)
    preflight(settings)
    ctl = control(settings, clock)
    return build_app(settings, ctl, rates, producer(settings))
