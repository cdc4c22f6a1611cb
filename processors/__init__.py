"""callcharge pure charging core: no Kafka, Redis, asyncio, Prometheus, environment or clock.

Time always comes in as an argument; state is folded, never read from the outside.
"""

from . import native

# before any module of the core loads: the compiled build goes on the path only if it is
# of these sources (processors/native.py)
native.choose(__path__)
