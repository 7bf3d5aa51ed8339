"""The admin port's JWKS follows keys that change while it serves (automatic rotation)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping

import pytest
from prometheus_client import CollectorRegistry

from delegation_service.adapters.keys import KeySet, generate_signing_key
from delegation_service.transport.http import JWKS_PATH, METADATA_PATH, AdminHttpServer, AdminSettings


class Keys:
    """The current key set, which the test replaces as a rotation would."""

    def __init__(self) -> None:
        self.current = KeySet(generate_signing_key("ES256"))

    def jwks(self) -> Mapping[str, object]:
        return self.current.jwks()


@pytest.fixture
def served() -> Iterator[tuple[Keys, str]]:
    keys = Keys()
    server = AdminHttpServer(
        AdminSettings(
            listen="127.0.0.1:0", issuer="https://d.invalid", jwks=keys.jwks, jwks_max_age_seconds=2
        ),
        CollectorRegistry(),
        ready=lambda: True,
    ).start()
    yield keys, f"http://127.0.0.1:{server.port}"
    server.stop()


def get(url: str, etag: str | None = None) -> tuple[int, dict[str, object], str]:
    request = urllib.request.Request(url, headers={"If-None-Match": etag} if etag else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read()), response.headers["ETag"]
    except urllib.error.HTTPError as error:
        return error.code, {}, error.headers["ETag"]


def kids(document: dict[str, object]) -> list[str]:
    keys = document["keys"]
    assert isinstance(keys, list)
    return [str(key["kid"]) for key in keys]


def test_a_new_key_set_is_served_at_once_with_a_new_etag(served: tuple[Keys, str]) -> None:
    keys, base = served
    status, before, etag = get(base + JWKS_PATH)
    assert status == 200 and kids(before) == [keys.current.active.kid]
    assert get(base + JWKS_PATH, etag)[0] == 304
    upcoming = generate_signing_key("ES256")
    keys.current = KeySet(keys.current.active, next_keys=[upcoming])
    status, after, new_etag = get(base + JWKS_PATH, etag)
    assert status == 200  # the old ETag no longer matches: a revalidating cache gets the new key
    assert kids(after) == [keys.current.active.kid, upcoming.kid]
    assert new_etag != etag
    assert get(base + METADATA_PATH)[1]["jwks_uri"] == f"{base}{JWKS_PATH}"


def test_a_fixed_mapping_is_still_served_as_before() -> None:
    jwks = KeySet(generate_signing_key("ES256")).jwks()
    server = AdminHttpServer(
        AdminSettings(listen="127.0.0.1:0", issuer="https://d.invalid", jwks=jwks),
        CollectorRegistry(),
        lambda: True,
    ).start()
    try:
        status, served, _ = get(f"http://127.0.0.1:{server.port}{JWKS_PATH}")
        assert status == 200 and served == jwks
    finally:
        server.stop()
