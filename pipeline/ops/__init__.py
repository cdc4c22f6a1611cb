"""Operator commands: publish (tenants load, ingest), rate, dlq, rebuild, status."""
