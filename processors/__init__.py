"""callcharge pure charging core: no Kafka, Redis, asyncio, Prometheus, environment or clock.

Time always comes in as an argument; state is folded, never read from the outside.
"""
