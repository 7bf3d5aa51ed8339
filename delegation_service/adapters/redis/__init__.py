"""The token registry over Redis (single node, Sentinel or Cluster), as a package of its concerns.

- :mod:`.registry`: :class:`RedisRegistry`, the key layout and the round trips of each operation;
- :mod:`.scripts` and ``lua/*.lua``: the Lua scripts, package data loaded once and registered;
- :mod:`.records`: how records and revocation events are encoded in Redis;
- :mod:`.durability`: the persistence settings revocations need, checked at start-up and by health;
- :mod:`.calls`: the client types and the failure translation every module shares.
"""

from delegation_service.adapters.redis.calls import RedisClient
from delegation_service.adapters.redis.durability import (
    REQUIRED_SETTINGS,
    PersistenceProblem,
    UnsafePersistence,
    check_persistence_at_startup,
    persistence_problems,
)
from delegation_service.adapters.redis.registry import CHAIN_VIEW_MAX, SMALL_CHAIN_FIELDS, RedisRegistry

__all__ = [
    "CHAIN_VIEW_MAX",
    "REQUIRED_SETTINGS",
    "SMALL_CHAIN_FIELDS",
    "PersistenceProblem",
    "RedisClient",
    "RedisRegistry",
    "UnsafePersistence",
    "check_persistence_at_startup",
    "persistence_problems",
]
