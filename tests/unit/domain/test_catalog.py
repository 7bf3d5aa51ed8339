"""The scope catalog: built once from plain data, every flaw named by its setting (SPEC §2)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from delegation_service.domain.catalog import DEFAULT_DELEGATION_SCOPE, Catalog, CatalogError
from delegation_service.domain.scopes import BearerType, Permission, StructuredScope, UrlScope, parse_scope

UITPAS = "https://api.publiq.be/auth/uitpas"

CatalogData = Callable[[], dict[str, Any]]


def test_demo_catalog_builds_with_audiences_scopes_and_clients(catalog: Catalog) -> None:
    assert catalog.audiences == {"directory", "warehouse"}
    assert catalog.scopes[("directory", "person")] == {BearerType.PERSON}
    assert catalog.scopes[("directory", "machines")] == {BearerType.ORGANIZATION}
    assert catalog.scopes[("warehouse", "items")] == {BearerType.PERSON, BearerType.ORGANIZATION}
    assert UITPAS in catalog.url_scopes
    assert catalog.delegation_scope == StructuredScope("directory", "delegations", Permission.READ_WRITE)
    assert set(catalog.clients) == {"billing", "inventory", "reader", "greedy", "nothing"}
    assert catalog.clients["nothing"].allowed == ()


def test_bearer_types_of_an_undeclared_scope_is_empty(catalog: Catalog) -> None:
    undeclared = parse_scope("directory.nobody.r")
    assert isinstance(undeclared, StructuredScope)

    assert catalog.bearer_types(undeclared) == frozenset()


@pytest.mark.parametrize(
    ("text", "is_delegation"),
    [
        ("directory.delegations.rw", True),
        ("directory.delegations.r", True),
        ("Org.directory.delegations.rw", True),
        (f"Org/{'b1475f65-236c-58b8-96e1-e1778b43beb7'}.directory.delegations.r", True),
        ("directory.person.rw", False),
        ("warehouse.delegations.rw", False),
        (UITPAS, False),
    ],
)
def test_delegation_scope_is_recognised_at_any_permission_or_bearer(
    catalog: Catalog, text: str, is_delegation: bool
) -> None:
    assert catalog.is_delegation_scope(parse_scope(text)) is is_delegation


@pytest.mark.parametrize(
    ("client_id", "scope", "allowed"),
    [
        ("billing", "directory.person.r", True),
        ("billing", "directory.person.rw", False),  # the lattice goes down, never up
        ("billing", "warehouse.items.r", True),  # rw allows r
        ("billing", "warehouse.items.rw", True),
        ("billing", "Org.warehouse.items.r", True),  # bearer parts are irrelevant to the client
        ("billing", UITPAS, True),
        ("billing", "https://api.publiq.be/auth/entry", False),
        ("reader", "warehouse.items.rw", False),
        ("nothing", "directory.person.r", False),
    ],
)
def test_client_may_hold_follows_the_lattice(
    catalog: Catalog, client_id: str, scope: str, allowed: bool
) -> None:
    assert catalog.clients[client_id].may_hold(parse_scope(scope)) is allowed


def test_delegation_scope_name_is_configurable(demo_catalog_data: CatalogData) -> None:
    data = demo_catalog_data()
    data["delegation_scope"] = "warehouse.items.rw"

    assert Catalog.from_mapping(data).delegation_scope == StructuredScope(
        "warehouse", "items", Permission.READ_WRITE
    )


def test_delegation_scope_defaults_to_the_seed_name(demo_catalog_data: CatalogData) -> None:
    data = demo_catalog_data()
    del data["delegation_scope"]

    assert str(Catalog.from_mapping(data).delegation_scope) == DEFAULT_DELEGATION_SCOPE


def test_minimal_catalog_needs_only_the_delegation_scope() -> None:
    catalog = Catalog.from_mapping({"audiences": {"directory": {"scopes": {"delegations": ["Per"]}}}})

    assert catalog.clients == {}
    assert catalog.url_scopes == frozenset()


def _set(data: dict[str, Any], path: str, value: object) -> None:
    *parents, last = path.split("/")
    node = data
    for key in parents:
        node = node[key]
    node[last] = value


@pytest.mark.parametrize(
    ("path", "value", "setting"),
    [
        # Bearer types.
        ("audiences/directory/scopes/person", ["Person"], "audiences.directory.scopes.person"),
        ("audiences/directory/scopes/person", ["per"], "audiences.directory.scopes.person"),
        ("audiences/directory/scopes/person", ["Per", "Usr"], "audiences.directory.scopes.person"),
        ("audiences/directory/scopes/person", [], "audiences.directory.scopes.person"),
        ("audiences/directory/scopes/person", "Per", "audiences.directory.scopes.person"),
        ("audiences/directory/scopes/person", [1], "audiences.directory.scopes.person"),
        # Scope and audience names outside the grammar.
        ("audiences/directory/scopes/Person", ["Per"], "audiences.directory.scopes.Person"),
        ("audiences/directory/scopes/pe", ["Per"], "audiences.directory.scopes.pe"),
        ("audiences/directory/scopes/p3rson", ["Per"], "audiences.directory.scopes.p3rson"),
        ("audiences/directory/scopes/per.son", ["Per"], "audiences.directory.scopes.per.son"),
        ("audiences/Shop", {"scopes": {"items": ["Per"]}}, "audiences.Shop.scopes.items"),
        ("audiences/Org.shop", {"scopes": {"items": ["Per"]}}, "audiences.Org.shop.scopes.items"),
        ("audiences/sh", {"scopes": {"items": ["Per"]}}, "audiences.sh.scopes.items"),
        # Tables that are not tables.
        ("audiences", ["directory"], "audiences"),
        ("audiences/directory", ["person"], "audiences.directory"),
        ("audiences/directory/scopes", ["person"], "audiences.directory.scopes"),
        ("clients", ["billing"], "clients"),
        ("clients/billing", ["directory.person.r"], "clients.billing"),
        # Client scopes: a list of declared scopes in the returned form.
        ("clients/billing/scopes", "directory.person.r", "clients.billing.scopes"),
        ("clients/billing/scopes", ["directory.nobody.r"], "clients.billing.scopes"),
        ("clients/billing/scopes", ["nowhere.person.r"], "clients.billing.scopes"),
        ("clients/billing/scopes", ["Per.directory.person.r"], "clients.billing.scopes"),
        ("clients/billing/scopes", ["directory.person"], "clients.billing.scopes"),
        ("clients/billing/scopes", ["https://undeclared.example/scope"], "clients.billing.scopes"),
        ("clients/billing/scopes", [None], "clients.billing.scopes"),
        # URL scopes.
        ("url_scopes", ["http://api.publiq.be/auth/uitpas"], "url_scopes"),
        ("url_scopes", ["directory.person.r"], "url_scopes"),
        ("url_scopes", UITPAS, "url_scopes"),
        # The delegation scope.
        ("delegation_scope", "directory.nobody.rw", "delegation_scope"),
        ("delegation_scope", "nowhere.delegations.rw", "delegation_scope"),
        ("delegation_scope", "Org.directory.delegations.rw", "delegation_scope"),
        ("delegation_scope", "directory.delegations", "delegation_scope"),
        ("delegation_scope", UITPAS, "delegation_scope"),
        ("delegation_scope", 42, "delegation_scope"),
    ],
)
def test_malformed_catalog_raises_catalog_error_naming_the_setting(
    demo_catalog_data: CatalogData, path: str, value: object, setting: str
) -> None:
    data = demo_catalog_data()
    _set(data, path, value)

    with pytest.raises(CatalogError) as caught:
        Catalog.from_mapping(data)

    assert caught.value.setting == setting
    assert setting in str(caught.value)


def test_removing_the_declared_delegation_scope_is_refused(demo_catalog_data: CatalogData) -> None:
    data = demo_catalog_data()
    del data["audiences"]["directory"]["scopes"]["delegations"]

    with pytest.raises(CatalogError) as caught:
        Catalog.from_mapping(data)

    assert caught.value.setting == "delegation_scope"


def test_catalog_error_is_a_value_error_with_the_problem_in_an_attribute() -> None:
    error = CatalogError("clients.billing.scopes", "must be a list of strings")

    assert isinstance(error, ValueError)
    assert error.problem == "must be a list of strings"


def test_client_allowed_scopes_are_parsed_into_domain_scopes(catalog: Catalog) -> None:
    allowed = catalog.clients["billing"].allowed

    assert UrlScope(UITPAS) in allowed
    assert StructuredScope("directory", "person", Permission.READ) in allowed
