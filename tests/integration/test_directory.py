"""The tenant directory read from several threads at once, as the control worker does
(its timer polls, a catch-up runs at start, an event of a tenant not yet read catches up):
every tenant's book is built, whichever thread read its records."""

from __future__ import annotations

import threading
import time

import pytest

from pipeline.adapters.avro.codec import Codec
from pipeline.adapters.directory import TenantDirectory
from pipeline.dev import traffic
from pipeline.ops.publish import publish_tenants
from tests.integration.harness import Env

pytestmark = pytest.mark.integration


def test_readers_on_three_threads_build_every_tenants_book(env: Env) -> None:
    tenants = traffic.tenants(300, seed=41, users_per_tenant=40, prefix=env.tag)
    publish_tenants(env.settings, tenants)
    directory = TenantDirectory(env.settings, Codec(env.settings.schemas_dir), None)
    stop = time.monotonic() + 8
    errors: list[BaseException] = []

    def keep(read: object) -> None:
        try:
            while time.monotonic() < stop:
                read()  # type: ignore[operator]
        except BaseException as exc:
            errors.append(exc)

    readers = [
        threading.Thread(target=directory.catch_up),  # the control worker's start
        threading.Thread(target=keep, args=(lambda: directory.poll(0),)),  # its timer
        threading.Thread(target=keep, args=(lambda: directory.catch_up(timeout=5),)),  # an unknown tenant
    ]
    try:
        for r in readers:
            r.start()
        for r in readers:
            r.join(120)
        assert errors == []
        assert {t["tenant_id"] for t in tenants} <= set(directory.books)
        assert all(len(directory.books[t["tenant_id"]].tenant.users) == 40 for t in tenants)
    finally:
        directory.close()
