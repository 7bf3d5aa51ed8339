"""OpenTelemetry spans (issue 14.4) through a real gRPC channel and a real Redis, read back with the SDK's
in-memory span exporter: one SERVER span per RPC from the official gRPC instrumentation, the chain id
and client on it, a CLIENT span per store call under it, and never a token in any of them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from delegation.v1 import delegation_pb2
from delegation_service.app import build, ephemeral_keys, load_catalog
from delegation_service.app import build_tracing as app_build_tracing
from delegation_service.client import DelegationClient
from delegation_service.config import Config, ConfigError
from delegation_service.dev import demo_catalog_path
from delegation_service.tracing import CHAIN_ID, CLIENT_ID, ERROR_REASON, Tracing
from tests.devserver import REPO
from tests.integration.harness import SERVICE_ISSUER, Harness, build_test_app

pytestmark = pytest.mark.redis

DELEGATE = "/delegation.v1.DelegationService/Delegate"
REVOKE_CHAIN = "/delegation.v1.DelegationAdminService/RevokeChain"
# A W3C trace context, as a traced gateway would send it.
CALLER_TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
CALLER_SPAN_ID = 0xB7AD6B7169203331
TRACEPARENT = f"00-{CALLER_TRACE_ID:032x}-{CALLER_SPAN_ID:016x}-01"
IDLE_SECONDS = 1.5


@dataclass
class Traced:
    harness: Harness
    exporter: InMemorySpanExporter

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def server_span(self, method: str) -> ReadableSpan:
        (span,) = [s for s in self.spans() if s.kind is SpanKind.SERVER and s.name == method]
        return span

    def children(self, parent: ReadableSpan) -> list[ReadableSpan]:
        assert parent.context is not None
        return [
            s for s in self.spans() if s.parent is not None and s.parent.span_id == parent.context.span_id
        ]


@pytest.fixture(scope="module")
def traced(redis_server: object) -> Iterator[Traced]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app, upstream, secret = build_test_app(
        store="redis",
        redis_url=redis_server.url,  # type: ignore[attr-defined]
        redis_key_prefix="it-tracing",
        redis_allow_unsafe_persistence=True,
        access_mode="open",
    )
    # The same application, built again with the in-memory exporter in place of the configured one.
    app = build(
        app.config,
        keys=ephemeral_keys("ES256"),
        catalog=load_catalog(demo_catalog_path()),
        extra_trusted=[upstream.trusted_issuer()],
        tracing=Tracing(provider),
    )
    harness = Harness(app, app.serve(), upstream, secret)
    yield Traced(harness, exporter)
    harness.server.stop(0)
    app.close()


@pytest.fixture
def client(traced: Traced) -> Iterator[DelegationClient]:
    traced.exporter.clear()
    with traced.harness.client() as c:
        yield c


def test_a_delegation_is_one_server_span_with_its_chain_and_client_and_its_redis_calls_below(
    traced: Traced, client: DelegationClient
) -> None:
    child = client.delegate(traced.harness.parent(), "billing", ["warehouse.items.r"])

    rpc = traced.server_span(DELEGATE)
    assert rpc.attributes is not None
    assert rpc.attributes["rpc.system"] == "grpc"
    assert rpc.attributes["rpc.service"] == "delegation.v1.DelegationService"
    assert rpc.attributes["rpc.method"] == "Delegate"
    assert rpc.attributes["rpc.grpc.status_code"] == grpc.StatusCode.OK.value[0]
    assert rpc.attributes[CLIENT_ID] == "billing"
    assert rpc.attributes[CHAIN_ID] == child.chain_id
    assert rpc.status.status_code is StatusCode.UNSET

    store = traced.children(rpc)
    assert store, "no store span under the RPC"
    assert {s.kind for s in store} == {SpanKind.CLIENT}
    operations = [s.attributes["db.operation.name"] for s in store if s.attributes]
    assert "mint" in operations
    for span in store:
        assert span.attributes is not None and span.context is not None and rpc.context is not None
        assert span.attributes["db.system.name"] == "redis"
        assert span.name == "redis " + str(span.attributes["db.operation.name"])
        assert span.attributes[CHAIN_ID] == child.chain_id
        assert span.context.trace_id == rpc.context.trace_id


def test_a_refusal_marks_the_span_with_its_code_and_reason(traced: Traced, client: DelegationClient) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        client.delegate(traced.harness.parent(), "billing", ["directory.person.rw"])

    rpc = traced.server_span(DELEGATE)
    assert rpc.attributes is not None
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert rpc.attributes["rpc.grpc.status_code"] == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert rpc.attributes[ERROR_REASON] == "SCOPE_NOT_ALLOWED_FOR_CLIENT"
    assert rpc.status.status_code is StatusCode.ERROR
    assert rpc.status.description == "PERMISSION_DENIED SCOPE_NOT_ALLOWED_FOR_CLIENT"


def test_a_caller_s_traceparent_makes_the_rpc_span_its_child(
    traced: Traced, client: DelegationClient
) -> None:
    stub = client.public  # the generated stub, to send metadata of our own
    stub.Delegate(
        delegation_pb2.DelegateRequest(
            parent_token=traced.harness.parent(), client_id="billing", scopes=["warehouse.items.r"]
        ),
        timeout=5,
        metadata=(("traceparent", TRACEPARENT),),
    )

    rpc = traced.server_span(DELEGATE)
    assert rpc.context is not None and rpc.parent is not None
    assert rpc.context.trace_id == CALLER_TRACE_ID
    assert rpc.parent.span_id == CALLER_SPAN_ID and rpc.parent.is_remote


def test_an_operator_call_carries_the_chain_it_names(traced: Traced, client: DelegationClient) -> None:
    child = client.delegate(traced.harness.parent(), "billing", ["warehouse.items.r"])
    traced.exporter.clear()

    client.revoke_chain(child.chain_id, dry_run=True)

    rpc = traced.server_span(REVOKE_CHAIN)
    assert rpc.attributes is not None and rpc.attributes[CHAIN_ID] == child.chain_id
    assert any(s.name == "redis revoke_known_chain" for s in traced.children(rpc))


def test_no_token_or_secret_appears_in_any_span(traced: Traced, client: DelegationClient) -> None:
    parent = traced.harness.parent()
    child = client.delegate(parent, "billing", ["warehouse.items.r"])
    client.introspect(child.access_token)
    client.revoke(child.access_token)
    with pytest.raises(grpc.RpcError):
        client.delegate(parent, "billing", [child.access_token])  # a token pasted as a scope
    client.get_chain(child.chain_id)

    exported = "\n".join(span.to_json() for span in traced.spans())
    assert len(traced.spans()) >= 5
    for secret in (parent, child.access_token, traced.harness.operator_secret):
        for part in secret.split("."):  # not the token, nor any of its three parts
            assert part not in exported
    assert "eyJ" not in exported  # nothing JWS-shaped at all
    for span in traced.spans():
        events = [(event.name, dict(event.attributes or {})) for event in span.events]
        assert not events, f"{span.name} recorded {events}"
    names = {json.loads(span.to_json())["name"] for span in traced.spans()}
    assert "/delegation.v1.DelegationService/Introspect" in names


def test_background_store_reads_make_no_traces(traced: Traced, client: DelegationClient) -> None:
    # The revocation feed's follower reads the store 20 times a second and the health monitor pings it
    # every second; none of that is a call anyone traces.
    time.sleep(IDLE_SECONDS)

    assert traced.spans() == []


def test_tracing_is_off_unless_configured_and_then_loads_no_instrumentation() -> None:
    # redis-py imports the OpenTelemetry API itself when it is installed; what must stay out is ours.
    probe = (
        "import sys\n"
        "from tests.integration.harness import build_test_app\n"
        "app, _, _ = build_test_app(store='memory')\n"
        "loaded = ('delegation_service.tracing', 'opentelemetry.instrumentation', 'opentelemetry.exporter')\n"
        "print(app.tracing, sorted(m for m in sys.modules if m.startswith(loaded)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "None []"
    assert Config(issuer=SERVICE_ISSUER).tracing_exporter == "none"


@pytest.mark.parametrize("exporter", ["console", "otlp"])
def test_each_exporter_builds_a_provider_of_its_own(exporter: str) -> None:
    tracing = app_build_tracing(
        Config(issuer=SERVICE_ISSUER, tracing_exporter=exporter, tracing_service_name="ds-test").validate()
    )
    assert tracing is not None
    assert tracing.provider.resource.attributes["service.name"] == "ds-test"
    assert tracing.provider is not trace.get_tracer_provider()  # never the process-wide one
    tracing.shutdown()


@pytest.mark.parametrize(
    ("settings", "setting"),
    [
        ({"tracing_exporter": "jaeger"}, "tracing.exporter"),
        ({"tracing_sample_ratio": 1.5}, "tracing.sample_ratio"),
        ({"tracing_sample_ratio": -0.1}, "tracing.sample_ratio"),
    ],
)
def test_bad_tracing_settings_are_named(settings: dict[str, object], setting: str) -> None:
    with pytest.raises(ConfigError) as error:
        Config(issuer=SERVICE_ISSUER, **settings).validate()  # type: ignore[arg-type]
    assert error.value.setting == setting
