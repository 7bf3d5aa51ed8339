"""The registry's Lua scripts are real Lua: every ``.lua`` file, and every script as the registry runs it,
compiles in a real Redis (``SCRIPT LOAD``), so a syntax error fails here rather than on a first call."""

from __future__ import annotations

import hashlib
import time

import pytest
import redis

from delegation_service.adapters.redis import RedisRegistry
from delegation_service.adapters.redis.scripts import HELPERS, Scripts, lua_files, source

pytestmark = pytest.mark.redis


@pytest.mark.parametrize("name", sorted(lua_files()))
def test_each_lua_file_compiles(redis_client: redis.Redis, name: str) -> None:
    sha = redis_client.script_load(lua_files()[name])
    assert redis_client.script_exists(sha) == [True]


@pytest.mark.parametrize("name", sorted(HELPERS))
def test_each_script_compiles_with_its_helpers(redis_client: redis.Redis, name: str) -> None:
    sha = redis_client.script_load(source(name))
    assert redis_client.script_exists(sha) == [True]


def test_a_syntax_error_fails_script_load(redis_client: redis.Redis) -> None:
    # Guards the two tests above: SCRIPT LOAD compiles, it does not merely store the text.
    with pytest.raises(redis.ResponseError, match=r"(?i)error compiling script"):
        redis_client.script_load("local function broken(\nreturn 1")


def test_every_lua_file_is_a_script_or_a_helper_in_use() -> None:
    used = set(HELPERS) | {helper for helpers in HELPERS.values() for helper in helpers}
    assert set(lua_files()) == used


def test_a_shebang_stays_the_first_line() -> None:
    # Redis reads the read-only flag only from the first line; the helpers go after it.
    for name in ("snapshot", "chain_view"):
        assert source(name).startswith("#!lua flags=no-writes\n")
    assert "#!" not in source("mint")


def test_the_registry_runs_the_scripts_from_the_package(redis_client: redis.Redis) -> None:
    redis_client.script_flush()
    registry = RedisRegistry(redis_client, prefix="scripts")
    now = int(time.time())
    registry.revoke_chain("chain-1", now + 60, now)
    # The registry's first call loaded the script after NOSCRIPT: the text Redis holds is the package's.
    mark_sha = hashlib.sha1(source("mark").encode()).hexdigest()
    assert redis_client.script_exists(mark_sha) == [True]
    assert Scripts.register(redis_client).mark.sha == mark_sha
