"""The pure rules of sender-constrained children, audience narrowing and DPoP claims."""

from __future__ import annotations

import base64
import hashlib

import pytest

from delegation_service.domain.binding import (
    Confirmation,
    PossessionProof,
    certificate_thumbprint,
    child_confirmation,
    is_thumbprint,
)
from delegation_service.domain.dpop import (
    DpopClaims,
    ProofWindow,
    access_token_hash,
    check_proof,
    normalize_htu,
)
from delegation_service.domain.errors import InvalidDpopProof, InvalidRequest, ProofOfPossessionRequired

K1 = "A" * 43
K2 = "B" * 43
CERT = "C" * 43


@pytest.mark.parametrize(
    ("parent", "proof", "requested", "child"),
    [
        (None, PossessionProof(), None, None),
        (None, PossessionProof(dpop_jkt=K1), None, Confirmation(jkt=K1)),
        (None, PossessionProof(), K2, Confirmation(jkt=K2)),
        (Confirmation(jkt=K1), PossessionProof(dpop_jkt=K1), None, Confirmation(jkt=K1)),
        (Confirmation(jkt=K1), PossessionProof(dpop_jkt=K1), K2, Confirmation(jkt=K2)),
        (
            Confirmation(x5t_s256=CERT),
            PossessionProof(certificate_x5t_s256=CERT),
            None,
            Confirmation(x5t_s256=CERT),
        ),
    ],
)
def test_child_binding(
    parent: Confirmation | None, proof: PossessionProof, requested: str | None, child: Confirmation | None
) -> None:
    assert child_confirmation(parent, proof, requested) == child


@pytest.mark.parametrize(
    ("parent", "proof"),
    [
        (Confirmation(jkt=K1), PossessionProof()),
        (Confirmation(jkt=K1), PossessionProof(dpop_jkt=K2)),
        (Confirmation(x5t_s256=CERT), PossessionProof(dpop_jkt=K1)),
        (Confirmation(jkt=K1, x5t_s256=CERT), PossessionProof(dpop_jkt=K1)),
    ],
)
def test_a_bound_parent_needs_proof_of_its_key(parent: Confirmation, proof: PossessionProof) -> None:
    with pytest.raises(ProofOfPossessionRequired):
        child_confirmation(parent, proof, None)


def test_a_requested_key_must_be_a_thumbprint() -> None:
    with pytest.raises(InvalidRequest):
        child_confirmation(None, PossessionProof(), "not-a-thumbprint")


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("https://AS.example/token", "https://as.example/token"),
        ("https://as.example:443/token", "https://as.example/token"),
        ("http://as.example:80/token?x=1#f", "http://as.example/token"),
        ("http://127.0.0.1:8443/oauth2/token", "http://127.0.0.1:8443/oauth2/token"),
    ],
)
def test_htu_normalisation(a: str, b: str) -> None:
    assert normalize_htu(a) == normalize_htu(b)


class Seen:
    def __init__(self) -> None:
        self.seen: set[tuple[str, str]] = set()

    def first_use(self, jkt: str, jti: str, expires_at: int) -> bool:
        fresh = (jkt, jti) not in self.seen
        self.seen.add((jkt, jti))
        return fresh


def claims(**changes: object) -> DpopClaims:
    values: dict[str, object] = {
        "jkt": K1,
        "jti": "j",
        "htm": "POST",
        "htu": "https://as.example/t",
        "iat": 1000,
    }
    values.update(changes)
    return DpopClaims(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("proof", "detail"),
    [
        (claims(htm="GET"), "htm"),
        (claims(htu="https://other.example/t"), "htu"),
        (claims(htu="ftp://as.example/t"), "htu"),
        (claims(iat=1000 + 6), "future"),
        (claims(iat=1000 - 61), "old"),
        (claims(ath="wrong"), "ath"),
    ],
)
def test_proof_claims_refused(proof: DpopClaims, detail: str) -> None:
    with pytest.raises(InvalidDpopProof) as raised:
        check_proof(
            proof,
            method="POST",
            url="https://as.example/t",
            now=1000,
            window=ProofWindow(60, 5),
            replay=Seen(),
            access_token="tok",
        )
    assert detail in raised.value.detail


def test_proof_accepted_once_and_ath_required_at_resources() -> None:
    replay = Seen()
    good = claims(ath=access_token_hash("tok"))

    def run(proof: DpopClaims, require_ath: bool) -> None:
        check_proof(
            proof,
            method="POST",
            url="https://as.example/t",
            now=1000,
            window=ProofWindow(),
            replay=replay,
            access_token="tok",
            require_ath=require_ath,
        )

    run(good, require_ath=True)
    with pytest.raises(InvalidDpopProof) as replayed:
        run(good, require_ath=False)
    assert "replay" in replayed.value.detail
    with pytest.raises(InvalidDpopProof) as without_ath:
        run(claims(jti="k"), require_ath=True)
    assert "ath" in without_ath.value.detail


def test_a_certificate_thumbprint_is_the_unpadded_base64url_sha256_of_its_der() -> None:
    der = bytes(range(256)) * 3
    thumbprint = certificate_thumbprint(der)

    assert thumbprint == base64.urlsafe_b64encode(hashlib.sha256(der).digest()).decode().rstrip("=")
    assert is_thumbprint(thumbprint)
