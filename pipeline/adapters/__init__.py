"""Adapters: Kafka clients and topics, the Redis store and its Lua, the Avro codec, the
domain <-> Avro records, input files, ledger read-back, metrics, the tenant directory."""

# The core first: its build check (processors.native) decides whether avro_fast, compiled in
# the core's group, may load as compiled, before anything here imports it.
import processors  # noqa: F401
