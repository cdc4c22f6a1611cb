"""Kafka clients, built in one place from Settings; workers never build their own."""

from __future__ import annotations

import logging
import ssl
import time
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, Producer
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)

from pipeline.config import Settings, Topics
from pipeline.errors import FatalError

log = logging.getLogger(__name__)


def security(settings: Settings) -> dict[str, Any]:
    """The librdkafka settings of the configured transport security (every client)."""
    conf: dict[str, Any] = {"security.protocol": settings.kafka_security_protocol}
    if settings.kafka_security_protocol.startswith("SASL"):
        conf["sasl.mechanism"] = settings.kafka_sasl_mechanism
        conf["sasl.username"] = settings.kafka_sasl_username
        conf["sasl.password"] = settings.kafka_sasl_password
    if settings.kafka_security_protocol.endswith("SSL"):
        conf["ssl.endpoint.identification.algorithm"] = "https"  # the broker's name must match
        if settings.kafka_ssl_ca_file:
            conf["ssl.ca.location"] = settings.kafka_ssl_ca_file
        if settings.kafka_ssl_cert_file:
            conf["ssl.certificate.location"] = settings.kafka_ssl_cert_file
            conf["ssl.key.location"] = settings.kafka_ssl_key_file
    return conf


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """The TLS context of the Python clients (faust): the same CA, client certificate and
    host-name check as librdkafka's."""
    ctx = ssl.create_default_context(cafile=settings.kafka_ssl_ca_file or None)
    if settings.kafka_ssl_cert_file:
        ctx.load_cert_chain(settings.kafka_ssl_cert_file, settings.kafka_ssl_key_file or None)
    return ctx


def faust_credentials(settings: Settings) -> Any:
    """faust's `broker_credentials` for the configured security (None: plaintext)."""
    import faust

    protocol = settings.kafka_security_protocol
    ctx = ssl_context(settings) if protocol.endswith("SSL") else None
    if protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password,
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=ctx,
        )
    if ctx is not None:
        return faust.SSLCredentials(ctx)
    return None


# librdkafka's own log goes through Python logging (served on poll), so it has the process's
# format: a JSON line under LOG_FORMAT=json, not a raw "%3|...|FAIL|" line on stderr.
KAFKA_LOG = logging.getLogger("librdkafka")


def client_conf(settings: Settings, **conf: Any) -> dict[str, Any]:
    """bootstrap.servers and security, then the client's own settings."""
    return {"bootstrap.servers": settings.bootstrap, "logger": KAFKA_LOG, **security(settings), **conf}


PREFLIGHT_TIMEOUT_S = 15.0
# librdkafka's log of the preflight client: collected for the error message, not printed
PREFLIGHT_LOG = logging.getLogger("callcharge.kafka.preflight")
PREFLIGHT_LOG.propagate = False
PREFLIGHT_LOG.addHandler(logging.NullHandler())


def preflight(settings: Settings, timeout: float = PREFLIGHT_TIMEOUT_S) -> None:
    """Fail fast, and say why, when the broker cannot be reached with the configured
    security (an untrusted certificate, a refused login): a worker would otherwise retry in
    silence. Raises FatalError naming the broker and librdkafka's reason."""
    errors: list[str] = []

    def on_error(err: Any) -> None:
        errors.append(err.str())

    class Collect(logging.Handler):  # librdkafka says why a connection failed in its log
        def emit(self, record: logging.LogRecord) -> None:
            errors.append(record.getMessage().split("]: ", 1)[-1])

    handler = Collect()
    PREFLIGHT_LOG.addHandler(handler)
    try:
        client = AdminClient(client_conf(settings, error_cb=on_error, logger=PREFLIGHT_LOG))
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.list_topics(timeout=min(3.0, max(0.1, deadline - time.monotonic())))
                return
            except KafkaException as exc:
                errors.append(exc.args[0].str() if exc.args else str(exc))
            client.poll(0.2)  # serves the queued log lines and errors
            fatal = [e for e in errors if any(w in e for w in ("SSL", "certificate", "SASL", "uthentication"))]
            if fatal or time.monotonic() >= deadline:
                why = (fatal or errors or ["no answer"])[0]
                raise FatalError(
                    f"Kafka at {settings.bootstrap} ({settings.kafka_security_protocol}) cannot be used: {why}"
                )
    finally:
        PREFLIGHT_LOG.removeHandler(handler)


def admin(settings: Settings) -> AdminClient:
    return AdminClient(client_conf(settings))


def topic_specs(settings: Settings) -> list[NewTopic]:
    t = settings.topic
    partitions = {
        "cdr": settings.cdr_partitions,
        "charges": settings.charges_partitions,
        "balance_events": settings.charges_partitions,
    }
    specs = []
    for name in Topics.__dataclass_fields__:
        config = {"cleanup.policy": "compact"} if name in Topics.COMPACTED else {}
        if name in Topics.KEPT:
            config["retention.ms"] = "-1"
            config["retention.bytes"] = "-1"
        parts = partitions.get(name, settings.other_partitions)
        specs.append(NewTopic(getattr(t, name), num_partitions=parts, replication_factor=1, config=config))
    return specs


def create_topics(settings: Settings, timeout: float = 30.0) -> dict[str, str]:
    """Create every topic. An existing one keeps its partitions, but gets the configs we
    rely on (ledger retention, compaction) when they differ: a deployment made by an older
    version would otherwise keep, say, the broker's 7-day retention on the ledger."""
    client = admin(settings)
    try:
        existing = set(client.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise FatalError(f"broker at {settings.bootstrap} does not answer: {exc}") from None
    report = {}
    todo = []
    for spec in topic_specs(settings):
        if spec.topic in existing:
            report[spec.topic] = _align_config(client, spec, timeout)
        else:
            todo.append(spec)
    if todo:
        for topic, fut in client.create_topics(todo, operation_timeout=timeout).items():
            try:
                fut.result()
                report[topic] = "created"
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" in str(exc):
                    report[topic] = "exists"
                else:
                    raise FatalError(f"cannot create topic {topic}: {exc}") from None
    wanted = {s.topic for s in topic_specs(settings)}
    deadline = time.monotonic() + timeout
    while not wanted <= set(client.list_topics(timeout=timeout).topics):
        if time.monotonic() > deadline:
            raise FatalError("topics were created but do not show in metadata")
        time.sleep(0.1)
    return report


def _align_config(client: AdminClient, spec: NewTopic, timeout: float) -> str:
    wanted: dict[str, str] = dict(spec.config or {})
    if not wanted:
        return "exists"
    resource = ConfigResource("topic", spec.topic)
    try:
        current = {k: v.value for k, v in client.describe_configs([resource])[resource].result(timeout).items()}
    except KafkaException as exc:
        return f"exists (configs not readable: {exc})"
    change = {k: v for k, v in wanted.items() if current.get(k) != v}
    if not change:
        return "exists"
    entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in sorted(change.items())]
    try:
        for fut in client.incremental_alter_configs(
            [ConfigResource("topic", spec.topic, incremental_configs=entries)]
        ).values():
            fut.result(timeout)
    except KafkaException as exc:
        raise FatalError(f"topic {spec.topic}: cannot set {', '.join(change)}: {exc}") from None
    return "exists; set " + ", ".join(f"{k}={v}" for k, v in sorted(change.items()))


def take_batch(c: Consumer, max_n: int, wait_s: float) -> list[Message]:
    """What has arrived, up to `max_n` messages, waiting at most `wait_s` for the first one
    and never for more: light traffic makes small batches (low latency), a backlog full
    ones (throughput), with no timer holding a batch back. The charging worker and the
    benchmark's passthrough batch the same way."""
    msgs = c.consume(max_n, 0)
    if msgs or wait_s <= 0:
        return msgs
    msgs = c.consume(1, wait_s)
    if msgs and max_n > 1:
        msgs += c.consume(max_n - 1, 0)
    return msgs


def producer(settings: Settings, transactional_id: str | None = None, extra: dict[str, Any] | None = None) -> Producer:
    conf: dict[str, Any] = {
        **client_conf(settings),
        "linger.ms": 5,
        "enable.idempotence": True,
        "compression.type": "none",
    }
    if transactional_id:
        conf["transactional.id"] = transactional_id
        # A worker's transaction spans one batch's produce and commit (well under a
        # second). If the worker dies inside it, read_committed readers of its output
        # wait until the broker aborts it: keep that short (Kafka Streams uses 10 s).
        conf["transaction.timeout.ms"] = 10000
        # Records leave when commit_transaction() flushes them, not while the batch is
        # still being produced: the time in which a worker can die with its records on
        # the broker but its transaction open is a few ms per batch, not the whole
        # produce loop. (The embedded broker never expires such a transaction and does
        # not hide aborted records from read_committed readers; see txn_leases.)
        conf["linger.ms"] = 100
    conf.update(extra or {})
    return Producer(conf)


def consumer(settings: Settings, group_id: str, **extra: Any) -> Consumer:
    conf: dict[str, Any] = {
        **client_conf(settings),
        "group.id": group_id,
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": settings.session_timeout_ms,
        "heartbeat.interval.ms": max(500, settings.session_timeout_ms // 6),
        "max.poll.interval.ms": 300000,
        # The broker may hold a fetch until this much time passes; charging is latency
        # sensitive and batches are formed by consume(), so do not let fetches idle long.
        "fetch.wait.max.ms": 25,
    }
    conf.update(extra)
    return Consumer(conf)
