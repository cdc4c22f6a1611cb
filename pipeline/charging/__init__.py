"""The charging hot path: the worker's commit protocol, transactional-id leases, backlog probe."""
