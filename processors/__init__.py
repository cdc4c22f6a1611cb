"""callcharge pure charging core: no Kafka, Redis, asyncio, Prometheus, environment or clock.

Time always comes in as an argument; state is folded, never read from the outside.
"""

from . import native

native.check()  # before any module of the core loads: the compiled build only if it is of these sources
