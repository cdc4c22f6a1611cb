"""The OpenAPI 3.0 document of the HTTP API, served at /openapi.json and checked against the
live API by a property-based run (tests/integration/test_api_contract.py)."""

from __future__ import annotations

from typing import Any

from processors.model import CALL_TYPES

# Exactly what api_input.money accepts: a plain decimal string, at most 6 decimals, at most
# 1 000 000 000 (processors.money.MAX_AMOUNT); an amount is also above zero.
_UNITS = r"[1-9][0-9]{0,8}(\.[0-9]{1,6})?|1000000000(\.0{1,6})?"
_FRACTION = r"0\.([1-9][0-9]{0,5}|0[1-9][0-9]{0,4}|00[1-9][0-9]{0,3}|000[1-9][0-9]{0,2}|0000[1-9][0-9]?|00000[1-9])"
MONEY = {"type": "string", "pattern": rf"^(0(\.[0-9]{{1,6}})?|{_UNITS})$", "example": "10.00"}
AMOUNT = {"type": "string", "pattern": rf"^({_FRACTION}|{_UNITS})$", "example": "50.00"}
# 400: the request is not what this document allows; 422: it is, and a rule refuses it
# (a manual funding below the minimum purchase, a month that has not begun); 409: it
# conflicts with the tenant's billing or an earlier request; 410: the tenant was removed.
ERROR = {
    "description": "refused, with the reason",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "string"}, "original": {"type": "object"}},
            }
        }
    },
}
COMMAND_ID = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$"}
REQUESTED_BY = {"type": "string", "minLength": 1, "maxLength": 200, "nullable": True}
TENANT = {
    "name": "tenant_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"},
}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    """A required JSON request body with this schema."""
    return {"required": True, "content": {"application/json": {"schema": schema}}}


NUMBER = "^[+]?[0-9]{1,20}$"  # E.164 digits with an optional '+' (processors.inputs.number_text)


def _errors(*codes: int) -> dict[str, Any]:
    base = {"400": ERROR, "401": ERROR, "403": ERROR, "404": ERROR, "503": ERROR}
    return {**base, **{str(c): ERROR for c in codes}}


BALANCE = {
    "type": "object",
    "required": ["tenant_id", "currency", "balance", "deficit", "lots"],
    "properties": {
        "tenant_id": {"type": "string"},
        "currency": {"type": "string"},
        "balance": {"type": "string"},
        "deficit": {"type": "string"},
        "recharge_in_flight": {"type": "string", "nullable": True},
        "lots": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["lot_id", "amount", "remaining", "purchased_at", "expires_at", "expired"],
                "properties": {
                    "lot_id": {"type": "string"},
                    "amount": {"type": "string"},
                    "remaining": {"type": "string"},
                    "purchased_at": {"type": "string"},
                    "expires_at": {"type": "string"},
                    "expired": {"type": "boolean"},
                },
            },
        },
    },
}
# On: the amount and the trigger are needed. Off: the amounts kept unless given.
AUTO_RECHARGE = {
    "oneOf": [
        {
            "type": "object",
            "required": ["enabled", "amount", "trigger"],
            "additionalProperties": False,
            "properties": {"enabled": {"type": "boolean", "enum": [True]}, "amount": AMOUNT, "trigger": MONEY},
        },
        {
            "type": "object",
            "required": ["enabled"],
            "additionalProperties": False,
            "properties": {
                "enabled": {"type": "boolean", "enum": [False]},
                "amount": {**AMOUNT, "nullable": True},
                "trigger": {**MONEY, "nullable": True},
            },
        },
    ]
}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "callcharge control API",
            "version": "1",
            "description": "Communications Credits balance, funding, auto-recharge and call authorization. "
            "Every /v1 route needs `Authorization: Bearer <token>`; a token is scoped to tenants, read or write.",
        },
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": {
            "/health": {
                "get": {
                    "security": [],
                    "responses": {"200": _json({"type": "object", "required": ["status"]})},
                }
            },
            "/v1/tenants/{tenant_id}/balance": {
                "get": {"parameters": [TENANT], "responses": {"200": _json(BALANCE), **_errors()}}
            },
            "/v1/tenants/{tenant_id}/transactions": {
                "get": {
                    "parameters": [
                        TENANT,
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                        },
                    ],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["tenant_id", "transactions"],
                                "properties": {"transactions": {"type": "array", "items": {"type": "object"}}},
                            }
                        ),
                        **_errors(),
                    },
                }
            },
            "/v1/tenants/{tenant_id}": {
                "delete": {
                    "description": "Offboard the tenant (write scope): its calls are no longer charged (their "
                    "CDRs go to the dead-letter topic as tenant_removed), the ledger gets a tenant_removed "
                    "event with the closing balance, and nothing is deleted. 410 once it was removed.",
                    "parameters": [TENANT],
                    "requestBody": {
                        "required": False,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "properties": {
                                        "command_id": {**COMMAND_ID, "nullable": True},
                                        "requested_by": REQUESTED_BY,
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "202": _json(
                            {"type": "object", "required": ["command_id", "status"]}, "accepted: removed once"
                        ),
                        **_errors(410),
                    },
                }
            },
            "/v1/tenants/{tenant_id}/funds": {
                "post": {
                    "parameters": [TENANT],
                    "requestBody": _body(
                        {
                            "type": "object",
                            "required": ["amount"],
                            "additionalProperties": False,
                            "properties": {
                                "amount": AMOUNT,
                                "command_id": {**COMMAND_ID, "nullable": True},
                                "kind": {"type": "string", "enum": ["manual", "partner", None], "nullable": True},
                                "requested_by": REQUESTED_BY,
                            },
                        }
                    ),
                    "responses": {
                        "202": _json(
                            {"type": "object", "required": ["command_id", "status"]}, "accepted: applied once"
                        ),
                        **_errors(409, 410, 422),
                    },
                }
            },
            "/v1/tenants/{tenant_id}/auto-recharge": {
                "get": {
                    "parameters": [TENANT],
                    "responses": {"200": _json({"type": "object", "required": ["enabled"]}), **_errors()},
                },
                "put": {
                    "parameters": [TENANT],
                    "requestBody": _body(AUTO_RECHARGE),
                    "responses": {"202": _json({"type": "object", "required": ["status"]}), **_errors(409, 410)},
                },
            },
            **{
                f"/v1/tenants/{{tenant_id}}/reports/{kind}": {
                    "get": {
                        "description": f"The {kind} report: text/{fmt} (default) or JSON by Accept; what "
                        f"`callcharge report {kind}` writes",
                        "parameters": [
                            TENANT,
                            {
                                "name": "month",
                                "in": "query",
                                "required": False,
                                "schema": {"type": "string", "pattern": "^20[0-9]{2}-(0[1-9]|1[0-2])$"},
                            },
                        ],
                        "responses": {
                            "200": {
                                "description": "the report",
                                "content": {
                                    f"text/{fmt}": {"schema": {"type": "string"}},
                                    "application/json": {"schema": {}},
                                },
                            },
                            **_errors(422),
                        },
                    }
                }
                for kind, fmt in (("usage", "csv"), ("pools", "csv"), ("statement", "plain"))
            },
            "/v1/tenants/{tenant_id}/authorize": {
                "post": {
                    "parameters": [TENANT],
                    "requestBody": _body(
                        {
                            "type": "object",
                            "required": ["user_id", "number"],
                            "additionalProperties": False,
                            "properties": {
                                "user_id": {"type": "string", "minLength": 1, "maxLength": 200},
                                "number": {"type": "string", "pattern": NUMBER},
                                "call_type": {"type": "string", "enum": [*sorted(CALL_TYPES), None], "nullable": True},
                                "caller": {"type": "string", "pattern": NUMBER, "nullable": True},
                            },
                        }
                    ),
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["allowed", "bucket", "reason"],
                                "properties": {
                                    "allowed": {"type": "boolean"},
                                    "bucket": {"type": "string"},
                                    "max_minutes": {"type": "integer", "nullable": True},
                                    "reason": {"type": "string"},
                                },
                            }
                        ),
                        **_errors(),
                    },
                }
            },
        },
    }
