"""callcharge's runtime around the pure core (`processors/`).

Rooms by role, imports pointing one way (tests/unit/test_layering.py):

    cli            the command table
    dev/           embedded stack, traffic, demo, bench
    ops/           operator commands
    wiring         the one place clients are built
    charging/      the charging worker      control/   the control worker
    reports/       the ledger read back; finance's reports and the chart
    adapters/      Kafka, Redis, Avro (avro/), files, metrics, tenant directory
    config, errors
    processors/    the pure core
"""
