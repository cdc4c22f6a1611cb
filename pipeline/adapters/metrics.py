"""Prometheus metrics of the workers, created on an injected registry.

Labels stay low-cardinality: classification, reason, topic, tenant never (tenants may be
many); never a phone number or a user.
"""

from __future__ import annotations

import platform
from bisect import bisect_left
from collections.abc import Iterable
from importlib import metadata

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from processors.inputs import DeadLetterReason
from processors.model import BILLABLE, FREE_UNRATED, INCLUDED, MIXED, NOT_CHARGED, OVERAGE, POOLED_ZONE_A

CLASSIFICATIONS = (INCLUDED, POOLED_ZONE_A, BILLABLE, OVERAGE, NOT_CHARGED, FREE_UNRATED, MIXED)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class BatchHistogram(Histogram):
    """A Histogram that also takes a batch of observations at once: one increment per
    bucket touched instead of a locked increment of a bucket and the sum per value
    (the end-to-end latency is observed for every CDR of every batch)."""

    def observe_many(self, amounts: Iterable[float]) -> None:
        self._raise_if_not_observable()  # type: ignore[no-untyped-call]
        bounds = self._upper_bounds  # the last is +Inf
        counts = [0] * len(bounds)
        total = 0.0
        for amount in amounts:
            total += amount
            counts[bisect_left(bounds, amount)] += 1  # the first bucket with amount <= bound
        self._sum.inc(total)
        for i, n in enumerate(counts):
            if n:
                self._buckets[i].inc(n)


class ChargingMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        self.consumed = Counter("callcharge_cdrs_consumed_total", "CDR messages consumed", registry=registry)
        self.charges = Counter("callcharge_charges_total", "Charges emitted", ["classification"], registry=registry)
        self.money = Counter(
            "callcharge_money_charged_micros_total",
            "Money charged to credits or overage, micro-units",
            ["currency", "bucket"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "callcharge_dead_letters_total", "CDRs sent to the dead-letter topic", ["reason"], registry=registry
        )
        self.replayed = Counter(
            "callcharge_replayed_calls_total",
            "Redelivered calls answered from their stored result (no debit)",
            registry=registry,
        )
        self.unrated = Counter(
            "callcharge_unrated_calls_total", "Calls with no matching tariff (FREECALL)", registry=registry
        )
        self.batch_size = Histogram(
            "callcharge_batch_size",
            "CDRs per batch",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000),
            registry=registry,
        )
        self.redis_seconds = Histogram(
            "callcharge_redis_apply_seconds", "Redis read+apply per batch", registry=registry
        )
        self.commit_seconds = Histogram("callcharge_txn_commit_seconds", "Kafka transaction commit", registry=registry)
        self.aborts = Counter("callcharge_txn_aborts_total", "Aborted Kafka transactions", registry=registry)
        self.cas_conflicts = Counter(
            "callcharge_redis_cas_conflicts_total",
            "Tenant state writes retried after a version conflict",
            registry=registry,
        )
        self.state_cache_stale = Counter(
            "callcharge_state_cache_stale_total",
            "Tenant states kept from this worker's last write that another writer had changed since "
            "(the control worker's funding, a rebuild): read again and re-folded",
            registry=registry,
        )
        self.lag = Gauge(
            "callcharge_consumer_lag",
            "CDRs not yet charged: each partition's end offset against the group's committed offset, "
            "over the whole CDR topic, whichever worker holds the partition (every worker reports the "
            "same figures: aggregate with max, not sum)",
            ["partition"],
            registry=registry,
        )
        self.stalled = Gauge(
            "callcharge_charging_stalled_seconds",
            "How long CDRs have waited while no committed offset of the charging group moved (0 while "
            "charging moves or nothing waits)",
            registry=registry,
        )
        self.rejoins = Counter(
            "callcharge_group_rejoins_total",
            "Times this worker, idle while the group left CDRs uncharged, left and rejoined the group",
            registry=registry,
        )
        self.latency = BatchHistogram(
            "callcharge_end_to_end_seconds",
            "CDR produced to charge committed",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        # Every series of a known label value exists from the start at 0, so increase()
        # and rate() see the first dead letter of a reason, not only the second.
        for reason in DeadLetterReason:
            self.dead_letters.labels(reason)
        for classification in CLASSIFICATIONS:
            self.charges.labels(classification)
        build_info(registry, "charging")


def build_info(registry: CollectorRegistry, component: str) -> None:
    """callcharge_build_info{version, python, component} 1: which build each target runs."""
    try:
        version = metadata.version("callcharge")
    except metadata.PackageNotFoundError:
        version = "unknown"
    Gauge("callcharge_build_info", "The running build", ["version", "python", "component"], registry=registry).labels(
        version, platform.python_version(), component
    ).set(1)
    # process_cpu_seconds_total, process_resident_memory_bytes, open fds, start time:
    # what a worker costs, beside what it does
    ProcessCollector(registry=registry)


# The control worker's routes (label values of the API series), as aiohttp names them.
API_ROUTES = (
    "/v1/tenants/{tenant_id}/balance",
    "/v1/tenants/{tenant_id}/transactions",
    "/v1/tenants/{tenant_id}/funds",
    "/v1/tenants/{tenant_id}/auto-recharge",
    "/v1/tenants/{tenant_id}/authorize",
    "/v1/tenants/{tenant_id}/reports/usage",
    "/v1/tenants/{tenant_id}/reports/pools",
    "/v1/tenants/{tenant_id}/reports/statement",
)
API_STATUSES = ("200", "202", "400", "401", "403", "404", "409", "503")
RECHARGE_FAILURES = ("card_expired", "card_declined", "timeout", "other")
EMAIL_OUTCOMES = ("sent", "failed")
CONTROL_TOPICS = ("commands", "balance-events", "charges", "timer")


class ControlMetrics:
    """The control worker's series: records handled, the API, payments, emails, expiries."""

    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        self.handled = Counter(
            "callcharge_control_records_total", "Records handled by the control worker", ["topic"], registry=registry
        )
        self.errors = Counter("callcharge_control_errors_total", "Control handler errors", ["topic"], registry=registry)
        # the charging worker's series of the same name: a record that failed 5 times
        self.dead_letters = Counter(
            "callcharge_dead_letters_total", "Records sent to the dead-letter topic", ["reason"], registry=registry
        )
        self.dead_letters.labels("unprocessable")
        self.api = Counter("callcharge_api_requests_total", "API requests", ["route", "status"], registry=registry)
        self.api_seconds = Histogram(
            "callcharge_api_request_seconds", "API request time", ["route"], buckets=LATENCY_BUCKETS, registry=registry
        )
        self.recharge_attempts = Counter(
            "callcharge_recharge_attempts_total", "Payment attempts of auto-recharges", registry=registry
        )
        self.recharge_failures = Counter(
            "callcharge_recharge_failures_total",
            "Auto-recharge payments that failed or timed out, by reason",
            ["reason"],
            registry=registry,
        )
        self.recharges_succeeded = Counter(
            "callcharge_recharges_succeeded_total", "Auto-recharges paid and credited", registry=registry
        )
        self.recharges_abandoned = Counter(
            "callcharge_recharges_abandoned_total",
            "Auto-recharges given up after their last attempt",
            registry=registry,
        )
        self.recharges_pending = Gauge(
            "callcharge_recharges_pending", "Auto-recharges waiting for a retry of their payment", registry=registry
        )
        self.gateway_seconds = Histogram(
            "callcharge_gateway_seconds", "Payment gateway call time", buckets=LATENCY_BUCKETS, registry=registry
        )
        self.emails = Counter(
            "callcharge_emails_total", "Admin notification emails, by outcome", ["outcome"], registry=registry
        )
        self.lots_expired = Counter(
            "callcharge_lots_expired_total", "Credit lots whose remainder was forfeited", registry=registry
        )
        for topic in CONTROL_TOPICS:
            self.handled.labels(topic)
            self.errors.labels(topic)
        for route in API_ROUTES:
            self.api_seconds.labels(route)
            for status in API_STATUSES:
                self.api.labels(route, status)
        for reason in RECHARGE_FAILURES:
            self.recharge_failures.labels(reason)
        for outcome in EMAIL_OUTCOMES:
            self.emails.labels(outcome)
        build_info(registry, "control")

    def failure(self, reason: str) -> None:
        self.recharge_failures.labels(reason if reason in RECHARGE_FAILURES else "other").inc()
