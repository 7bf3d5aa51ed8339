"""Claim mapping per trusted issuer (issue 18.1): where scopes, client and bearer are, read in one place.

The configuration side (every bad mapping a start-up error naming its setting) and the reading side
(through the real verifier, with tokens signed by PyJWT), including the providers of the README table.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from delegation_service.adapters.jwt_codec import IssuerRules, JwtVerifier, TrustedIssuer
from delegation_service.adapters.keys import KeySet, generate_signing_key, load_jwks, public_jwk
from delegation_service.adapters.upstream_claims import (
    DEFAULT_MAPPING,
    ClaimMapping,
    ClaimMappingError,
    ScopeFormat,
)
from delegation_service.config import ConfigError, load
from delegation_service.domain.errors import ParentRejected
from delegation_service.domain.scopes import Bearer, BearerType

ISSUER = "https://idp.example"
ORG = Bearer(BearerType.ORGANIZATION, "acme")
ZITADEL_ROLES = "urn:zitadel:iam:org:project:roles"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _verify(rsa_key: rsa.RSAPrivateKey, mapping: ClaimMapping, **claims: Any) -> Any:
    jwk = {**public_jwk(rsa_key.public_key()), "kid": "k1", "alg": "RS256"}
    issuer = TrustedIssuer(ISSUER, load_jwks({"keys": [jwk]}), IssuerRules(claims=mapping))
    verifier = JwtVerifier("https://delegation.example", KeySet(generate_signing_key()), [issuer], 30)
    now = int(time.time())
    payload = {"iss": ISSUER, "sub": "subject-1", "iat": now, "exp": now + 60, **claims}
    return verifier.verify(jwt.encode(payload, rsa_key, algorithm="RS256", headers={"kid": "k1"}))


# --- reading ------------------------------------------------------------------------------------------


def test_the_default_mapping_reads_as_before(rsa_key: rsa.RSAPrivateKey) -> None:
    token = _verify(rsa_key, DEFAULT_MAPPING, scope="a.b.r c.d.rw", azp="gw", scp=["ignored"])
    assert token.scopes == ("a.b.r", "c.d.rw")
    assert token.client_id == "gw"
    assert token.bearer == Bearer(BearerType.PERSON, "subject-1")
    token = _verify(rsa_key, DEFAULT_MAPPING, scp=["x.y.r"], client_id="c", bearer={"type": "Org", "id": "o"})
    assert (token.scopes, token.client_id, token.bearer) == (
        ("x.y.r",),
        "c",
        Bearer(BearerType.ORGANIZATION, "o"),
    )


@pytest.mark.parametrize(
    ("mapping", "claims", "expected"),
    [
        (ClaimMapping(scopes_claims=("scp",)), {"scp": "a.b.r c.d.r"}, ("a.b.r", "c.d.r")),  # Entra: a string
        (ClaimMapping(scopes_claims=("scp",)), {"scp": ["a.b.r", "a.b.r"]}, ("a.b.r",)),  # Okta: a list
        (ClaimMapping(scopes_claims=("roles",)), {"roles": ["app.reports.r"]}, ("app.reports.r",)),
        (ClaimMapping(scopes_claims=("scope",)), {"scope": "a.b.r", "scp": ["c.d.r"]}, ("a.b.r",)),
        (
            ClaimMapping(scopes_claims=("perms",), scopes_format=ScopeFormat.LIST),
            {"perms": ["p.q.rw"]},
            ("p.q.rw",),
        ),
        (ClaimMapping(scopes_claims=("roles",)), {"scope": "a.b.r"}, ()),  # only the configured claim counts
        # Entra: scp for delegated tokens, roles for app-only ones; the first present claim wins.
        (ClaimMapping(scopes_claims=("scp", "roles")), {"roles": ["a.b.r"]}, ("a.b.r",)),
        (ClaimMapping(scopes_claims=("scp", "roles")), {"scp": "c.d.r", "roles": ["a.b.r"]}, ("c.d.r",)),
        # ZITADEL: project roles as an object, role key -> {org id: domain}.
        (
            ClaimMapping(scopes_claims=(ZITADEL_ROLES,), scopes_format=ScopeFormat.OBJECT_KEYS),
            {ZITADEL_ROLES: {"a.b.r": {"1": "x"}, "c.d.rw": {"1": "x"}}},
            ("a.b.r", "c.d.rw"),
        ),
    ],
)
def test_scopes_come_from_the_configured_claim_in_its_form(
    rsa_key: rsa.RSAPrivateKey, mapping: ClaimMapping, claims: dict[str, Any], expected: tuple[str, ...]
) -> None:
    assert _verify(rsa_key, mapping, **claims).scopes == expected


@pytest.mark.parametrize(
    ("mapping", "claims"),
    [
        (ClaimMapping(scopes_claims=("roles",)), {"roles": "a.b.r"}),  # roles is a list
        (ClaimMapping(scopes_claims=("scope",)), {"scope": ["a.b.r"]}),  # scope is a string
        (ClaimMapping(scopes_claims=("scp",)), {"scp": [1, 2]}),
        (ClaimMapping(scopes_claims=("scp",)), {"scp": {"a": 1}}),
        (ClaimMapping(scopes_claims=("r",), scopes_format=ScopeFormat.OBJECT_KEYS), {"r": ["a.b.r"]}),
    ],
)
def test_a_scopes_claim_of_the_wrong_form_is_refused(
    rsa_key: rsa.RSAPrivateKey, mapping: ClaimMapping, claims: dict[str, Any]
) -> None:
    with pytest.raises(ParentRejected) as refused:
        _verify(rsa_key, mapping, **claims)
    assert refused.value.detail.startswith("malformed ")


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        ({"cid": "okta-app", "azp": "later"}, "okta-app"),
        ({"appid": "entra-v1-app"}, "entra-v1-app"),
        ({"client_id": "not-configured"}, ""),
    ],
)
def test_the_client_comes_from_the_configured_claims_in_order(
    rsa_key: rsa.RSAPrivateKey, claims: dict[str, Any], expected: str
) -> None:
    assert (
        _verify(rsa_key, ClaimMapping(client_claims=("cid", "appid", "azp")), **claims).client_id == expected
    )


def test_the_bearer_rules_in_order(rsa_key: rsa.RSAPrivateKey) -> None:
    mapping = ClaimMapping(bearer=ORG, client_bearers={"reports": Bearer(BearerType.ORGANIZATION, "beta")})
    assert _verify(rsa_key, mapping, client_id="reports").bearer == Bearer(BearerType.ORGANIZATION, "beta")
    # The issuer's fixed bearer wins over what the token claims.
    assert _verify(rsa_key, mapping, client_id="other", bearer={"type": "Per", "id": "x"}).bearer == ORG
    by_claim = ClaimMapping(bearer_id_claim="org_id", bearer_type=BearerType.ORGANIZATION)
    assert _verify(rsa_key, by_claim, org_id="gamma").bearer == Bearer(BearerType.ORGANIZATION, "gamma")
    # A token without the configured claim falls through to the default (a person named by sub).
    assert _verify(rsa_key, by_claim).bearer == Bearer(BearerType.PERSON, "subject-1")
    renamed = ClaimMapping(bearer_claim="acts_for")
    assert _verify(rsa_key, renamed, acts_for={"type": "Org", "id": "delta"}).bearer.id == "delta"
    only_clients = ClaimMapping(client_bearers={"reports": ORG})
    assert _verify(rsa_key, only_clients, client_id="else").bearer == Bearer(BearerType.PERSON, "subject-1")


def test_the_legacy_actor_claim_extends_the_default_client_claims(rsa_key: rsa.RSAPrivateKey) -> None:
    jwk = {**public_jwk(rsa_key.public_key()), "kid": "k1", "alg": "RS256"}
    issuer = TrustedIssuer(ISSUER, load_jwks({"keys": [jwk]}), IssuerRules(actor_claim="cid"))
    assert issuer.rules.claims.client_claims == ("client_id", "azp", "cid")
    with pytest.raises(ClaimMappingError, match="not both"):
        TrustedIssuer(
            ISSUER, issuer.keys, IssuerRules(actor_claim="cid", claims=ClaimMapping(client_claims=("appid",)))
        )


# --- configuration --------------------------------------------------------------------------------------

BASE = '[issuer]\nname = "https://delegation.example"\n[[trusted_issuers]]\nissuer = "https://idp.example"\n'


def _load(tmp_path: Path, text: str) -> Any:
    (tmp_path / "keys.json").write_text('{"keys": []}', encoding="utf-8")
    path = tmp_path / "config.toml"
    path.write_text(BASE + 'jwks_file = "keys.json"\n' + text, encoding="utf-8")
    return load(path, {})


def test_a_full_mapping_loads(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        "[trusted_issuers.claims]\n"
        'scopes = "scp"\nscopes_format = "list"\nclient = ["cid", "azp"]\n'
        'bearer = "Org/acme"\n'
        "[trusted_issuers.claims.client_bearers]\n"
        '"reports-app" = "Org/beta"\n',
    )
    (issuer,) = config.trusted_issuers
    assert issuer.rules.claims == ClaimMapping(
        scopes_claims=("scp",),
        scopes_format=ScopeFormat.LIST,
        client_claims=("cid", "azp"),
        bearer=ORG,
        client_bearers={"reports-app": Bearer(BearerType.ORGANIZATION, "beta")},
    )
    assert _load(tmp_path, 'actor_claim = "cid"\n').trusted_issuers[0].rules.claims.client_claims == (
        "client_id",
        "azp",
        "cid",
    )
    entra = _load(
        tmp_path, '[trusted_issuers.claims]\nscopes = ["scp", "roles"]\nclient = ["azp", "appid"]\n'
    )
    assert entra.trusted_issuers[0].rules.claims.scopes_claims == ("scp", "roles")
    by_claim = _load(tmp_path, '[trusted_issuers.claims]\nbearer_id_claim = "org"\nbearer_type = "Org"\n')
    assert by_claim.trusted_issuers[0].rules.claims.bearer_id_claim == "org"


@pytest.mark.parametrize(
    ("text", "setting"),
    [
        ('[trusted_issuers.claims]\nscope = "scp"\n', "claims.scope"),  # unknown key (a typo)
        ('[trusted_issuers.claims]\nscopes = ""\n', "claims.scopes"),
        ("[trusted_issuers.claims]\nscopes = []\n", "claims.scopes"),
        ('[trusted_issuers.claims]\nscopes = ["scp", "scp"]\n', "claims.scopes"),
        ('[trusted_issuers.claims]\nscopes = "scp"\nscopes_format = "csv"\n', "claims.scopes_format"),
        ('[trusted_issuers.claims]\nscopes_format = "list"\n', "claims.scopes_format"),  # without scopes
        ("[trusted_issuers.claims]\nclient = []\n", "claims.client"),
        ('[trusted_issuers.claims]\nclient = ["cid", "cid"]\n', "claims.client"),
        ('[trusted_issuers.claims]\nclient = ["cid", ""]\n', "claims.client"),
        ('actor_claim = "cid"\n[trusted_issuers.claims]\nclient = ["appid"]\n', "claims.client"),
        ('[trusted_issuers.claims]\nbearer = "Team/x"\n', "claims.bearer"),
        ('[trusted_issuers.claims]\nbearer = "Org/ACME"\n', "claims.bearer"),
        ('[trusted_issuers.claims]\nbearer_type = "Org"\n', "claims.bearer_type"),  # without the claim
        ('[trusted_issuers.claims]\nbearer_id_claim = "org"\n', "claims.bearer_id_claim"),  # no type
        ('[trusted_issuers.claims]\nbearer_id_claim = "org"\nbearer_type = "Team"\n', "claims.bearer_type"),
        (
            '[trusted_issuers.claims]\nbearer = "Org/a"\nbearer_id_claim = "org"\nbearer_type = "Org"\n',
            "claims.bearer",
        ),
        ('[trusted_issuers.claims]\nclient_bearers = "Org/a"\n', "claims.client_bearers"),
        ('[trusted_issuers.claims.client_bearers]\nreports = "org/a"\n', "claims.client_bearers.reports"),
        ('claims = "scp"\n', "claims"),
    ],
)
def test_a_bad_mapping_is_a_start_up_error_naming_the_setting(
    tmp_path: Path, text: str, setting: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text)
    assert caught.value.setting == f"trusted_issuers[0].{setting}"
