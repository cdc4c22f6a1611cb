"""Tenant ids are checked at configuration time, so no tenant's Redis keys can meet another's
whatever the call ids (a tenant `w}:call:K` once took over the state key of `w`'s call `K}`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from pipeline.adapters.files import load_tenants
from pipeline.adapters.store import outputs_key, result_key, tenant_key
from pipeline.config import Settings
from pipeline.errors import FatalError, InputError
from pipeline.ops.publish import publish_tenants
from processors.inputs import TENANT_ID, TenantError, tenant_from_dict

VALID = st.from_regex(TENANT_ID, fullmatch=True)


def entry(tid: str) -> dict[str, object]:
    return {"tenant_id": tid, "country": "US", "currency": "USD", "channel": "direct", "users": []}


@pytest.mark.parametrize(
    "tid", ["w}:call:K", "a{b}", "x:y", "", " lead", "t\\n", "é", "a" * 65, "-leading-dash", "semi;colon"]
)
def test_a_tenant_id_outside_the_alphabet_is_refused_with_the_rule(tid: str) -> None:
    with pytest.raises(TenantError, match="tenant"):
        tenant_from_dict(entry(tid))


@pytest.mark.parametrize("tid", ["72f988bf-86f1-41af-91ab-2d7cd011db47", "contoso", "T", "tenant_0001.eu", "a" * 64])
def test_guids_and_plain_names_are_tenant_ids(tid: str) -> None:
    assert tenant_from_dict(entry(tid)).tenant_id == tid


@given(VALID, VALID, st.text(min_size=1), st.text(min_size=1))
@example("w", "w", "K}", "K}")
def test_no_two_tenants_share_a_key_whatever_the_call_ids(a: str, b: str, call_a: str, call_b: str) -> None:
    keys_a = {tenant_key(a), result_key(a, call_a), outputs_key(a, 20400)}
    keys_b = {tenant_key(b), result_key(b, call_b), outputs_key(b, 20400)}
    if a != b:
        assert not keys_a & keys_b
    assert tenant_key(a) != result_key(a, call_a)
    assert outputs_key(a, 20400) != result_key(a, "20400")  # never one key of two types


USER = {"user_id": "u1", "usage_country": "US", "licences": ["MCOPSTN1"]}
LOT = {"lot_id": "L1", "amount": "10", "purchased_at": "2026-10-01T00:00:00Z"}


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"users": [USER, {**USER, "usage_country": "GB"}]}, "user u1 is listed twice"),
        ({"funding": [LOT, {**LOT, "amount": "20"}]}, "funding lot 'L1' is listed twice"),
        ({"country": "XX"}, "country 'XX' is not a country code"),
        ({"country": 1}, "country 1 is not a country code"),
        ({"users": [{**USER, "usage_country": "USA"}]}, "usage_country 'USA' is not a country code"),
        ({"currency": "dollars"}, "currency 'dollars' is not an ISO 4217 code"),
    ],
)
def test_a_configuration_that_cannot_mean_one_thing_is_refused(change: dict[str, object], said: str) -> None:
    # Before, a user or lot listed twice was taken silently (the last user won; both lots
    # were credited under one id) and any text passed as a country.
    with pytest.raises(TenantError, match=said):
        tenant_from_dict({**entry("t1"), **change})


def test_a_tenants_file_naming_a_tenant_twice_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tenants.json"
    path.write_text(json.dumps([entry("t1"), {**entry("t1"), "currency": "EUR"}]))
    with pytest.raises(InputError, match="tenant t1 is listed twice"):
        load_tenants(path)
    assert tenant_from_dict({**entry("t1"), "country": "us", "currency": "usd"}).country == "US"


def test_tenants_load_refuses_a_file_naming_a_tenant_twice() -> None:
    # checked before anything is published: no broker is needed to see it refused
    with pytest.raises(FatalError, match="tenant t1 is listed twice"):
        publish_tenants(Settings(), [entry("t1"), {**entry("t1"), "currency": "EUR"}])
