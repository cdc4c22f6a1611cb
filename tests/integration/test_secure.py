"""Secure transport for real: Kafka over TLS, Redis over TLS with an ACL user.

The test makes its own CA and server certificate, starts its own embedded broker (behind a
TLS front: see servers.TlsFront) and its own redis-server with TLS only and the default
user disabled. Both workers and the commands run over them; the charging differential
holds to the micro-unit; an untrusted certificate and a refused login stop a worker within
seconds with a message that says which.

SASL is configured the same way for every client (tests/unit/test_config.py checks what
each client is given) but is not run here: the embedded broker started with
--authentication closed the connection at SaslHandshake for librdkafka (PLAIN and SCRAM).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline import wiring
from pipeline.config import Settings
from tests.integration.conftest import Inbox
from tests.integration.harness import ControlProc, Env, assert_exact, calls, events, tenant, wait_exit, wait_for
from tests.integration.servers import Pki, RedisProcs, TlsFront, free_ports, make_pki, start_broker, wait_port
from tests.integration.test_charging import scenario

PASSWORD = "s3cret-for-callcharge"


@pytest.fixture
def secure(base_settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, Pki]]:
    pki = make_pki(tmp_path)
    broker_port, front_port, redis_port = free_ports(3)
    broker = start_broker(broker_port, tmp_path, advertised=f"localhost:{front_port}")
    redis = RedisProcs()
    redis.start(
        redis_port, tmp_path, "--port", "0", "--tls-port", str(redis_port),
        "--tls-cert-file", str(pki.cert), "--tls-key-file", str(pki.key), "--tls-ca-cert-file", str(pki.ca),
        "--tls-auth-clients", "no",
        "--user", "default", "off",
        "--user", "callcharge", "on", f">{PASSWORD}", "~cc:*", "~gw:*", "&*", "+@all", "-@dangerous", "+info",
    )  # fmt: skip
    try:
        wait_port(broker_port)
        with TlsFront(front_port, broker_port, pki):
            settings = replace(
                base_settings,
                kafka_bootstrap=f"localhost:{front_port}",
                kafka_security_protocol="SSL",
                kafka_ssl_ca_file=str(pki.ca),
                redis_url=f"rediss://localhost:{redis_port}/0",
                redis_username="callcharge",
                redis_password=PASSWORD,
                redis_ca_file=str(pki.ca),
            )
            wait_port(redis_port)
            yield settings, pki
    finally:
        broker.kill()
        broker.wait()
        redis.stop()


def test_both_workers_charge_and_recharge_exactly_over_tls_and_a_redis_acl_user(
    secure: tuple[Settings, Pki], tmp_path: Path, smtp: Inbox
) -> None:
    settings, _ = secure
    env = Env.make(settings, tmp_path)
    tenants, cdrs = scenario(env, 10, 3000, seed=91)
    rich = f"{env.tag}rich"  # auto-recharge through the control worker, over the same transport
    tenants.append(tenant(rich, "5", auto={"enabled": True, "amount": "25", "trigger": "2"}))
    cdrs += calls(rich, 10, 20)
    env.publish(tenants, cdrs)
    assert wait_exit(env.worker()) == 0
    assert_exact(env, tenants, cdrs, env.charges(min_count=len(cdrs)))
    control = ControlProc(env, smtp).start()  # pays the recharge the charging worker asked for
    wait_for(lambda: any(e["type"] == "recharge_succeeded" for e in events(env, rich)), timeout=60)
    status, bal = control.get(f"/v1/tenants/{rich}/balance")
    assert (status, bal["balance"]) == (200, "26.20")  # 5.00 - 3.80 + 25.00
    control.kill()
    check = env.cli("rebuild", "--check")  # a command, over the same transport
    assert check.returncode == 0 and " 0 differ" in check.stdout, check.stdout + check.stderr
    # nothing went in clear: the default user is off and the broker only answers the front
    assert "callcharge" in wiring.redis_client(settings).acl_whoami()


def test_an_untrusted_broker_certificate_stops_a_worker_at_once_saying_why(
    secure: tuple[Settings, Pki], tmp_path: Path
) -> None:
    settings, pki = secure
    env = Env.make(settings, tmp_path)
    started = time.monotonic()
    proc = env.worker(idle=5, extra={"CALLCHARGE_KAFKA_SSL_CA_FILE": str(pki.other_ca)})
    assert wait_exit(proc, timeout=60) == 1
    assert time.monotonic() - started < 30
    out = env.log(proc)
    assert "Kafka at localhost:" in out and "certificate verify failed" in out, out[-2000:]


def test_a_refused_redis_login_stops_a_worker_at_once_saying_why(secure: tuple[Settings, Pki], tmp_path: Path) -> None:
    settings, pki = secure
    env = Env.make(settings, tmp_path)
    started = time.monotonic()
    proc = env.worker(idle=5, extra={"CALLCHARGE_REDIS_PASSWORD": "wrong"})
    assert wait_exit(proc, timeout=60) == 1
    out = env.log(proc)
    assert "refused user 'callcharge'" in out and "wrong" not in out.split("refused user")[1][:200], out[-2000:]
    proc = env.worker(idle=5, extra={"CALLCHARGE_REDIS_CA_FILE": str(pki.other_ca)})
    assert wait_exit(proc, timeout=60) == 1
    assert "TLS refused" in env.log(proc) and "certificate verify failed" in env.log(proc)
    assert time.monotonic() - started < 40
