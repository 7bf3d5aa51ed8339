"""What every module of the Redis adapter shares: the client types, failing closed, reading replies."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from delegation_service.domain.errors import StoreUnavailable

RedisClient = redis.Redis | RedisCluster
"""The clients the registry accepts; built by the composition root, never here."""


@contextmanager
def store_call() -> Iterator[None]:
    """Turn every Redis failure into ``StoreUnavailable``: callers fail closed on it.

    A reply that does not decode is treated the same way: the store cannot answer this question.
    """
    try:
        yield
    except (RedisError, RedisClusterException, OSError) as exc:
        raise StoreUnavailable() from exc
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise StoreUnavailable(message="the token store returned an unreadable value") from exc


def result(value: Any) -> Any:
    """A reply of the synchronous client.

    redis-py types every reply as "value or awaitable" (one signature for its sync and async clients);
    the clients given to this registry are synchronous.
    """
    return value


def text(value: bytes | str | int) -> str:
    """A reply value as text (the clients do not decode responses)."""
    if isinstance(value, bytes):
        return value.decode()
    return str(value)
