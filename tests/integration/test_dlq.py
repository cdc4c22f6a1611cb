"""Dead letters as an operator sees them: listed by reason, re-driven once the cause is fixed."""

from __future__ import annotations

import pytest

from pipeline.adapters.avro.records import cdr_to_avro
from pipeline.dev import traffic
from pipeline.ops.publish import publish_tenants
from processors.inputs import cdr_from_dict
from tests.integration.harness import Env, assert_exact, wait_exit

pytestmark = pytest.mark.integration


def test_cdrs_of_a_tenant_configured_late_are_charged_after_a_redrive(env: Env) -> None:
    tenants = traffic.tenants(4, seed=70, prefix=env.tag)
    cdrs = traffic.cdrs(tenants, 800, seed=71)
    late = tenants[-1]
    late_cdrs = [c for c in cdrs if c["tenant_id"] == late["tenant_id"]]
    assert late_cdrs
    publish_tenants(env.settings, tenants[:-1])
    env.ingest(cdrs)
    negative = cdr_to_avro(cdr_from_dict(cdrs[0]))
    env.produce_record(
        env.settings.topic.cdr,
        cdrs[0]["tenant_id"],
        "cdr",
        {**negative, "call_id": "negative", "duration_s": -3},
    )
    assert wait_exit(env.worker()) == 0

    shown = env.cli("dlq")
    assert shown.returncode == 0, shown.stderr
    assert f"{env.settings.topic.dlq}: {len(late_cdrs) + 1} dead letters" in shown.stdout
    rows = {line.split()[0]: line.split()[1:3] for line in shown.stdout.splitlines()[2:4]}
    assert rows == {"unknown_tenant": [str(len(late_cdrs)), "0"], "bad_duration": ["1", "0"]}, shown.stdout

    refused = env.cli("dlq", "redrive", "--reason", "duplicate")
    assert refused.returncode == 1 and "charged again" in refused.stderr

    dry = env.cli("dlq", "redrive", "--reason", "unknown_tenant", "--dry-run")
    assert f"would re-drive {len(late_cdrs)} " in dry.stdout, dry.stdout + dry.stderr
    publish_tenants(env.settings, [late])  # the cause, fixed
    done = env.cli("dlq", "redrive", "--reason", "unknown_tenant")
    assert f"re-drove {len(late_cdrs)} 'unknown_tenant'" in done.stdout, done.stdout + done.stderr
    again = env.cli("dlq", "redrive", "--reason", "unknown_tenant")
    assert f"re-drove 0 'unknown_tenant' dead letters to {env.settings.topic.cdr} ({len(late_cdrs)} re-driven" in (
        again.stdout
    )

    assert wait_exit(env.worker()) == 0
    assert_exact(env, tenants, cdrs, env.charges(min_count=len(cdrs)))  # every call, once
    letters = env.read(env.settings.topic.dlq)
    assert sorted(d["reason"] for d in letters) == ["bad_duration"] + ["unknown_tenant"] * len(late_cdrs)
    after = env.cli("dlq", "--reason", "unknown_tenant", "--newest", "1")
    assert after.stdout.splitlines()[2].split()[1:3] == [str(len(late_cdrs)), str(len(late_cdrs))]
    assert after.stdout.rstrip().endswith("(re-driven)")
