"""Trusted issuers by URL (issue 12): fetches under a storm of unknown-kid calls, and time from a key
rotation at the provider to the first accepted token. Run by hand: ``make bench-jwks`` or
``.venv/bin/python -m bench.jwks [--rounds N] [--calls N]``; prints one JSON document.

Against the loopback provider of the test suite (devtools/oidc_provider.py), so the figures are the
service's own cost (single-flight, parsing, verifying), not an IdP's network latency.

- ``storm``: ``--calls`` threads released together verify one token whose kid the service has not seen
  (the provider rotated without overlap); the provider counts the JWKS requests.
- ``rotation_to_acceptance_ms``: the provider publishes a new key (no overlap) and signs with it; the
  time until the verifier accepts a token of the new key (the unknown-kid refresh included).
- ``grpc_rotation_to_acceptance_ms``: the same through the real gRPC service (Delegate).
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from typing import Any

from delegation_service.adapters.jwt_codec import JwtVerifier, TrustedIssuer
from delegation_service.adapters.keys import KeySet, generate_signing_key
from delegation_service.adapters.remote_jwks import RemoteKeySource, RemoteSettings
from delegation_service.app import build, ephemeral_keys, load_catalog
from delegation_service.client import DelegationClient
from delegation_service.config import Config
from delegation_service.config import TrustedIssuer as TrustedIssuerConfig
from delegation_service.dev import demo_catalog_path
from devtools.oidc_provider import OidcProvider

JOIN_TIMEOUT_SECONDS = 120.0


def _summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median": round(statistics.median(ordered), 3),
        "p90": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))], 3),
        "max": round(ordered[-1], 3),
    }


def _verifier(provider: OidcProvider, unknown_kid_interval: float) -> tuple[JwtVerifier, RemoteKeySource]:
    source = RemoteKeySource(
        RemoteSettings(issuer=provider.issuer, unknown_kid_interval_seconds=unknown_kid_interval)
    )
    if not source.refresh():
        raise SystemExit("the loopback provider did not answer")
    verifier = JwtVerifier(
        own_issuer="https://delegation.bench.invalid",
        own_keys=KeySet(generate_signing_key("ES256")),
        trusted=[TrustedIssuer(issuer=provider.issuer, source=source)],
        leeway_seconds=5,
    )
    return verifier, source


def storm(provider: OidcProvider, rounds: int, calls: int) -> dict[str, Any]:
    """Fetches caused by ``calls`` concurrent verifications of one unknown kid, per round."""
    fetches, seconds, failures = [], [], 0
    for _ in range(rounds):
        verifier, _source = _verifier(provider, unknown_kid_interval=10.0)
        key = generate_signing_key("ES256")
        provider.rotate(publish=[key], sign_with=key)
        token = provider.mint()
        before = provider.count("jwks")
        barrier = threading.Barrier(calls + 1, timeout=JOIN_TIMEOUT_SECONDS)
        failed: list[int] = []

        def call(
            verifier: JwtVerifier = verifier,
            token: str = token,
            failed: list[int] = failed,
            barrier: threading.Barrier = barrier,
        ) -> None:
            barrier.wait()
            try:
                verifier.verify(token)
            except Exception:
                failed.append(1)

        threads = [threading.Thread(target=call, daemon=True) for _ in range(calls)]
        for thread in threads:
            thread.start()
        barrier.wait()
        started = time.perf_counter()
        for thread in threads:
            thread.join(JOIN_TIMEOUT_SECONDS)
        seconds.append((time.perf_counter() - started) * 1000)
        fetches.append(provider.count("jwks") - before)
        failures += len(failed)
    return {
        "calls": calls,
        "rounds": rounds,
        "fetches_per_round": fetches,
        "failed_calls": failures,
        "all_calls_ms": _summary(seconds),
    }


def rotation_to_acceptance(provider: OidcProvider, rounds: int) -> dict[str, float]:
    """Milliseconds from a rotation without overlap to the first accepted token (verifier)."""
    verifier, _source = _verifier(provider, unknown_kid_interval=0.0)
    samples = []
    for _ in range(rounds):
        key = generate_signing_key("ES256")
        token = provider.mint(key=key)
        started = time.perf_counter()
        provider.rotate(publish=[key], sign_with=key)
        verifier.verify(token)
        samples.append((time.perf_counter() - started) * 1000)
    return _summary(samples)


def grpc_rotation_to_acceptance(provider: OidcProvider, rounds: int) -> dict[str, float]:
    """The same through the real gRPC service: rotation, then Delegate with a parent of the new key."""
    config = Config(
        listen="127.0.0.1:0",
        issuer="https://delegation.bench.invalid",
        store="memory",
        access_mode="open",
        verified_cache_size=0,
        trusted_issuers=(TrustedIssuerConfig(issuer=provider.issuer, unknown_kid_interval_seconds=0.0),),
    ).validate()
    app = build(config, keys=ephemeral_keys("ES256"), catalog=load_catalog(demo_catalog_path()))
    running = app.serve()
    samples = []
    try:
        with DelegationClient(f"127.0.0.1:{running.port}", 10.0) as client:
            for _ in range(rounds):
                key = generate_signing_key("ES256")
                parent = provider.mint(key=key, scopes=("directory.delegations.rw", "warehouse.items.rw"))
                started = time.perf_counter()
                provider.rotate(publish=[key], sign_with=key)
                client.delegate(parent, "billing", ["warehouse.items.r"])
                samples.append((time.perf_counter() - started) * 1000)
    finally:
        running.stop(0)
        app.close()
    return _summary(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5, help="storm rounds (default 5)")
    parser.add_argument("--calls", type=int, default=1000, help="concurrent calls per storm (default 1000)")
    parser.add_argument("--rotations", type=int, default=20, help="rotations timed (default 20)")
    args = parser.parse_args()
    provider = OidcProvider()
    try:
        report = {
            "storm": storm(provider, args.rounds, args.calls),
            "rotation_to_acceptance_ms": rotation_to_acceptance(provider, args.rotations),
            "grpc_rotation_to_acceptance_ms": grpc_rotation_to_acceptance(provider, args.rotations),
        }
    finally:
        provider.stop()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
