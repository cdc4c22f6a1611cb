"""Adapters: Kafka clients and topics, the Redis store and its Lua, Avro (`avro/`: the
codec, the generated hot path, domain <-> Avro records), input files, ledger read-back,
metrics, the tenant directory."""
