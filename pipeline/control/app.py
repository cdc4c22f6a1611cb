"""`callcharge control`: the faust-streaming app around `pipeline.control.Control`.

Agents: funding commands, balance events (recharge orchestration, service state,
notifications), charges (transaction history). A timer retries payments and forfeits
expired lots. The HTTP API, /health, /livez and /metrics are `pipeline.control.api`'s,
registered on this app's web server.

Faust delivers at least once; every handler is idempotent (see pipeline/control/lifecycle.py).
Handlers are short, synchronous Redis/SMTP work: they run in the default executor so the
event loop (heartbeats, web) stays responsive.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import faust
import redis
from confluent_kafka import KafkaException, Producer

from pipeline.adapters import kafka, logs
from pipeline.adapters.avro.records import dead_letter
from pipeline.config import Settings
from pipeline.control import api
from pipeline.control.lifecycle import Control, Output
from pipeline.errors import OutputsNotAcknowledged
from processors.inputs import DeadLetterReason
from processors.rating import RateCard

log = logging.getLogger(__name__)


# Redis or the broker unreachable: wait it out, the record is not at fault.
TRANSIENT = (redis.ConnectionError, redis.TimeoutError, KafkaException, OutputsNotAcknowledged)
MAX_TRIES = 5  # then a record that keeps failing is dead-lettered, never retried for ever


class Runner:
    """Runs each handler of the control worker until it succeeds, and produces what it
    returns. An unreachable Redis or broker is waited out (with back-off; a shutdown cancels
    the wait). Any other failure is the record's own (invalid, out of range, conflicting):
    after MAX_TRIES it goes to the dead-letter topic with its reason, and the stream behind
    it goes on."""

    def __init__(self, app: faust.App, settings: Settings, control: Control, out: Producer) -> None:
        self.app, self.control, self.out = app, control, out
        self.metrics = control.metrics
        self.dlq = settings.topic.dlq

    def emit(self, outputs: list[Output]) -> None:
        for topic, key, value in outputs:
            self.out.produce(topic, key=key, value=value)
        if self.out.flush(30):
            raise OutputsNotAcknowledged("control outputs not acknowledged by the broker")

    async def run(self, topic: str, fn: Callable[[], list[Output] | None], source: Any = None) -> None:
        loop = asyncio.get_running_loop()
        tries, pause = 0, 0.5
        while True:
            try:
                outputs = await loop.run_in_executor(None, fn)
                if outputs:
                    await loop.run_in_executor(None, self.emit, outputs)
                self.metrics.handled.labels(topic).inc()
                return
            except TRANSIENT as exc:
                self.metrics.errors.labels(topic).inc()
                log.warning("control handler for %s waits for Redis/Kafka (%s); retrying in %.1fs", topic, exc, pause)
            except Exception as exc:
                self.metrics.errors.labels(topic).inc()
                tries += 1
                if source is not None and tries >= MAX_TRIES:
                    log.error("control record %s/%s/%s failed %d times (%s): dead-lettered", *source[:3], tries, exc)
                    await loop.run_in_executor(None, self.emit, [self.dead_letter(source, exc)])
                    self.metrics.dead_letters.labels(DeadLetterReason.UNPROCESSABLE.value).inc()
                    return
                log.exception("control handler for %s failed (try %d of %d)", topic, tries, MAX_TRIES)
            if self.app.should_stop:  # shutting down: the record is redelivered to whoever runs next
                log.warning("control handler for %s gives up its retries: the worker is stopping", topic)
                raise asyncio.CancelledError
            await asyncio.sleep(pause)
            pause = min(5.0, pause * 2)

    def dead_letter(self, source: tuple[str, int, int, bytes | None, bytes], exc: Exception) -> Output:
        topic, partition, offset, key, value = source
        record = dead_letter(
            topic,
            partition,
            offset,
            key,
            value,
            DeadLetterReason.UNPROCESSABLE,
            f"{type(exc).__name__}: {exc}"[:500],
            self.control.now(),
        )
        return self.dlq, key or b"", self.control.codec.encode("dead_letter", record)


def origin(event: Any) -> tuple[str, int, int, bytes | None, bytes]:
    m = event.message
    return m.topic, m.partition, m.offset, m.key, event.value


def faust_app(settings: Settings) -> faust.App:
    """The faust app with callcharge's broker, web server and logging settings."""
    # faust configures logging itself when its worker starts: JSON lines stay JSON
    json_logs: dict[str, Any] = {}
    if settings.log_format == "json":
        json_logs["logging_config"] = logs.dict_config(settings.log_level)
    return faust.App(
        f"callcharge-control{settings.topic_prefix and '-' + settings.topic_prefix.strip('-')}",
        broker=f"kafka://{settings.bootstrap}",
        broker_credentials=kafka.faust_credentials(settings),
        store="memory://",
        web_host=settings.http_host,
        web_bind=settings.http_host,
        web_port=settings.http_port,
        web_in_thread=False,
        broker_session_timeout=settings.session_timeout_ms / 1000,
        broker_heartbeat_interval=max(0.5, settings.session_timeout_ms / 6000),
        topic_replication_factor=1,
        topic_allow_declare=False,
        consumer_auto_offset_reset="earliest",
        isolation_level="read_committed",
        web_application_options={"middlewares": [api.json_errors]},
        **json_logs,
    )


def build_app(settings: Settings, control: Control, rates: RateCard, out: Producer) -> faust.App:
    """The faust app around `control` (clients built by `pipeline.wiring`): an agent per
    topic, the timer, the directory's catch-up, and the HTTP API."""
    app = faust_app(settings)
    runner = Runner(app, settings, control, out)
    run = runner.run
    t = settings.topic
    commands = app.topic(t.commands, value_serializer="raw", key_serializer="raw")
    events = app.topic(t.balance_events, value_serializer="raw", key_serializer="raw")
    charges = app.topic(t.charges, value_serializer="raw", key_serializer="raw")
    directory = control.directory

    @app.agent(commands)
    async def on_command(stream: Any) -> None:
        async for event in stream.events():
            await run("commands", lambda v=event.value: control.handle_command(v), origin(event))

    @app.agent(events)
    async def on_event(stream: Any) -> None:
        async for event in stream.events():
            await run("balance-events", lambda v=event.value: control.handle_event(v), origin(event))

    @app.agent(charges)
    async def on_charge(stream: Any) -> None:
        async for event in stream.events():
            await run("charges", lambda v=event.value: control.handle_charge(v), origin(event))

    @app.timer(settings.control_tick_s)
    async def tick() -> None:
        await run("timer", lambda: (directory.poll(0), control.tick())[1])

    @app.task
    async def warm() -> None:
        await asyncio.get_running_loop().run_in_executor(None, directory.catch_up)

    api.register(app, settings, control, rates, out)
    return app
