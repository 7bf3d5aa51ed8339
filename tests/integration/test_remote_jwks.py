"""Trusting an issuer by URL (SPEC §3 rule 1, issue 12): the verifier and its remote key source against
a real OIDC-style provider on loopback (devtools/oidc_provider.py) that the tests rotate and break.

Time that the rules depend on (staleness, the unknown-kid rate limit) comes from a hand-driven
monotonic clock, and refreshes are triggered by the tests, so nothing here waits on a timer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from delegation_service.adapters.http_fetch import (
    FetchError,
    FetchLimits,
    check_fetch_url,
    fetch_json,
    tls_context,
)
from delegation_service.adapters.jwt_codec import JwtVerifier, TrustedIssuer
from delegation_service.adapters.keys import KeySet, generate_signing_key
from delegation_service.adapters.remote_jwks import RemoteKeySource, RemoteSettings, SourceState
from delegation_service.domain.errors import ParentRejected
from devtools.oidc_provider import JwksMode, OidcProvider


@dataclass
class ManualClock:
    """Monotonic seconds that move only when a test says so."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Recorder:
    """The source's events, as the metrics adapter would get them."""

    fetches: int = 0
    failures: list[str] = field(default_factory=list)
    keys: int = 0

    def fetched(self, issuer: str, keys: int) -> None:
        self.fetches += 1
        self.keys = keys

    def failed(self, issuer: str, reason: str) -> None:
        self.failures.append(reason)


@dataclass
class Setup:
    provider: OidcProvider
    source: RemoteKeySource
    verifier: JwtVerifier
    clock: ManualClock
    events: Recorder


@pytest.fixture
def provider() -> Iterator[OidcProvider]:
    running = OidcProvider()
    yield running
    running.stop()


def make_setup(provider: OidcProvider, *, discovery: bool = True, **settings: object) -> Setup:
    clock = ManualClock()
    events = Recorder()
    options: dict[str, object] = {
        "max_stale_seconds": 600.0,
        "unknown_kid_interval_seconds": 10.0,
        "limits": FetchLimits(timeout_seconds=2.0, max_bytes=65536),
        **settings,
    }
    source = RemoteKeySource(
        RemoteSettings(
            issuer=provider.issuer,
            jwks_uri=None if discovery else provider.jwks_uri,
            **options,  # type: ignore[arg-type]
        ),
        events=events,
        monotonic=clock,
    )
    verifier = JwtVerifier(
        own_issuer="https://delegation.test.invalid",
        own_keys=KeySet(generate_signing_key("ES256")),
        trusted=[TrustedIssuer(issuer=provider.issuer, source=source)],
        leeway_seconds=5,
    )
    return Setup(provider, source, verifier, clock, events)


@pytest.fixture
def setup(provider: OidcProvider) -> Setup:
    started = make_setup(provider)
    assert started.source.refresh()
    return started


def rejected(setup: Setup, token: str) -> str:
    with pytest.raises(ParentRejected) as caught:
        setup.verifier.verify(token)
    return caught.value.detail


def test_discovery_finds_the_jwks_and_its_keys_verify(setup: Setup) -> None:
    assert setup.verifier.verify(setup.provider.mint()).issuer == setup.provider.issuer
    assert setup.provider.count("discovery") == 1
    assert setup.provider.count("jwks") == 1
    status = setup.source.status()
    assert (status.state, status.keys, status.last_error) == (SourceState.READY, 1, None)


def test_a_configured_jwks_uri_needs_no_discovery(provider: OidcProvider) -> None:
    direct = make_setup(provider, discovery=False)
    assert direct.source.refresh()
    direct.verifier.verify(provider.mint())
    assert provider.count("discovery") == 0


def test_rotation_with_overlap_needs_no_extra_fetch_and_the_removed_key_stops_verifying(setup: Setup) -> None:
    old = setup.provider.signing_key
    new = generate_signing_key("ES256")
    setup.provider.rotate(publish=[old, new], sign_with=old)
    assert setup.source.refresh()  # the scheduled refresh learns the next key before it signs
    old_token = setup.provider.mint()
    setup.provider.rotate(publish=[old, new], sign_with=new)
    fetches = setup.provider.count("jwks")
    setup.verifier.verify(setup.provider.mint())
    setup.verifier.verify(old_token)  # overlap: both verify
    assert setup.provider.count("jwks") == fetches
    setup.provider.rotate(publish=[new], sign_with=new)
    assert setup.source.refresh()
    assert rejected(setup, old_token) == "unknown kid"
    setup.verifier.verify(setup.provider.mint())


def test_rotation_without_overlap_refreshes_on_the_unknown_kid_and_succeeds(setup: Setup) -> None:
    new = generate_signing_key("EdDSA")
    setup.provider.rotate(publish=[new], sign_with=new)
    fetches = setup.provider.count("jwks")
    assert setup.verifier.verify(setup.provider.mint()).subject == "alice"
    assert setup.provider.count("jwks") == fetches + 1


def test_garbage_kids_are_rate_limited(setup: Setup) -> None:
    stranger = generate_signing_key("ES256")  # never published
    fetches = setup.provider.count("jwks")
    for _ in range(20):
        assert rejected(setup, setup.provider.mint(key=stranger)) == "unknown kid"
    assert setup.provider.count("jwks") == fetches + 1
    setup.clock.now += 10.0  # the interval has passed: one more refresh is allowed
    rejected(setup, setup.provider.mint(key=stranger))
    assert setup.provider.count("jwks") == fetches + 2


def test_provider_down_keeps_the_cached_set_logs_once_and_counts(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    setup.provider.mode = JwksMode.DOWN
    with caplog.at_level(logging.WARNING, logger="delegation_service.adapters.remote_jwks"):
        for _ in range(3):
            setup.clock.now += 60.0
            assert not setup.source.refresh()
    assert [r.__dict__.get("event") for r in caplog.records] == ["jwks_refresh_failed"]
    assert setup.events.failures == ["http_status"] * 3
    status = setup.source.status()
    assert status.state is SourceState.STALE and status.usable and status.keys == 1
    setup.verifier.verify(setup.provider.mint())
    setup.provider.mode = JwksMode.OK
    assert setup.source.refresh()
    assert setup.source.status().state is SourceState.READY


def test_provider_down_past_the_staleness_bound_refuses_its_tokens(setup: Setup) -> None:
    token = setup.provider.mint()
    setup.provider.mode = JwksMode.RESET
    setup.clock.now += 599.0
    assert not setup.source.refresh()
    setup.verifier.verify(token)  # still within max_stale_seconds (600)
    setup.clock.now += 2.0
    assert rejected(setup, token) == "unknown kid"
    status = setup.source.status()
    assert status.state is SourceState.NO_KEYS and not status.usable
    assert status.last_error is not None and status.last_error.startswith("unreachable")


@pytest.mark.parametrize(
    ("mode", "reason"),
    [(JwksMode.GARBAGE, "invalid_json"), (JwksMode.HUGE, "too_large"), (JwksMode.SLOW, "timeout")],
)
def test_a_misbehaving_jwks_fails_the_refresh_and_keeps_the_last_good_set(
    provider: OidcProvider, mode: JwksMode, reason: str
) -> None:
    slow_limits = FetchLimits(timeout_seconds=0.5, max_bytes=65536)
    setup = make_setup(provider, limits=slow_limits)
    assert setup.source.refresh()
    provider.mode = mode
    assert not setup.source.refresh()
    assert setup.events.failures == [reason]
    setup.verifier.verify(provider.mint())


def test_a_jwks_without_usable_keys_is_refused(setup: Setup) -> None:
    setup.provider.rotate(publish=[], sign_with=setup.provider.signing_key)
    assert not setup.source.refresh()
    assert setup.events.failures == ["invalid_jwks"]


def test_metadata_naming_another_issuer_is_refused(provider: OidcProvider) -> None:
    provider.metadata_issuer = provider.issuer + "/other"
    setup = make_setup(provider)
    assert not setup.source.refresh()
    assert setup.events.failures == ["issuer_mismatch"]
    assert provider.count("jwks") == 0  # its jwks_uri is never followed
    assert setup.source.status().state is SourceState.NO_KEYS
    assert rejected(setup, provider.mint()) == "unknown kid"


def test_a_thousand_concurrent_calls_with_an_unknown_kid_cause_one_fetch(setup: Setup) -> None:
    new = generate_signing_key("ES256")
    setup.provider.rotate(publish=[new], sign_with=new)
    token = setup.provider.mint()
    fetches = setup.provider.count("jwks")
    calls = 1000
    barrier = threading.Barrier(calls, timeout=60)
    results: list[str] = []
    lock = threading.Lock()

    def call() -> None:
        barrier.wait()
        try:
            outcome = setup.verifier.verify(token).subject
        except ParentRejected as error:
            outcome = error.detail
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=call, daemon=True) for _ in range(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == ["alice"] * calls
    assert setup.provider.count("jwks") == fetches + 1


def test_a_key_that_is_one_of_ours_never_verifies_as_upstream(provider: OidcProvider) -> None:
    ours = generate_signing_key("ES256")
    provider.rotate(publish=[ours], sign_with=ours)
    source = RemoteKeySource(RemoteSettings(issuer=provider.issuer))
    verifier = JwtVerifier(
        own_issuer="https://delegation.test.invalid",
        own_keys=KeySet(ours),
        trusted=[TrustedIssuer(issuer=provider.issuer, source=source)],
        leeway_seconds=5,
    )
    assert source.refresh()
    with pytest.raises(ParentRejected) as caught:
        verifier.verify(provider.mint())
    assert caught.value.detail == "upstream key is one of our own signing keys"


@pytest.mark.parametrize(
    "url",
    ["http://idp.example/realms/x", "ftp://127.0.0.1/x", "https://user:pw@idp.example/", "/relative"],
)
def test_fetch_urls_must_be_https_or_loopback_http(url: str) -> None:
    with pytest.raises(ValueError, match=r"must|only"):
        check_fetch_url(url)


@pytest.mark.parametrize("url", ["https://idp.example/realms/x", "http://127.0.0.1:8080/x", "http://[::1]/x"])
def test_https_and_loopback_http_are_allowed(url: str) -> None:
    check_fetch_url(url)


def test_a_redirect_to_another_host_is_not_followed() -> None:
    class Redirect(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(302)
            # Same machine, other name: a different host as far as the rule goes.
            port = str(self.headers["Host"]).rsplit(":", 1)[1]
            self.send_header("Location", f"http://localhost:{port!s}/elsewhere")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(FetchError) as caught:
            fetch_json(f"http://127.0.0.1:{server.server_address[1]}/jwks", FetchLimits(), tls_context(None))
        assert caught.value.reason == "redirect"
    finally:
        server.shutdown()
        server.server_close()
