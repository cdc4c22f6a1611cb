"""Adapters: Kafka clients and topics, the Redis store and its Lua, the Avro codec, the
domain <-> Avro records, input files, ledger read-back, metrics, the tenant directory."""
