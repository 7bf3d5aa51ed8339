"""Server reflection, v1 and v1alpha: grpcurl and newer clients ask for v1 first, older ones for v1alpha.

grpcio-reflection implements v1alpha only. v1 is the same protocol under another package (the same
messages and field numbers), so the v1 service translates each message to v1alpha bytes and back and
lets grpc's reference implementation answer: one implementation, two service names.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import grpc
from grpc_reflection.v1alpha import reflection as reflection_v1alpha
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha_pb2

from delegation.reflection.v1 import reflection_pb2 as v1_pb2
from delegation.reflection.v1 import reflection_pb2_grpc as v1_pb2_grpc

V1_SERVICE_NAME: str = v1_pb2.DESCRIPTOR.services_by_name["ServerReflection"].full_name
V1ALPHA_SERVICE_NAME: str = reflection_v1alpha.SERVICE_NAME
SERVICE_NAMES = (V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME)


class ReflectionV1Servicer(v1_pb2_grpc.ServerReflectionServicer):
    """``grpc.reflection.v1.ServerReflection``, answered by the v1alpha reference implementation."""

    def __init__(self, service_names: Sequence[str]) -> None:
        self._v1alpha = reflection_v1alpha.ReflectionServicer(service_names)

    def ServerReflectionInfo(  # noqa: N802 (the generated servicer's method name)
        self,
        request_iterator: Iterator[v1_pb2.ServerReflectionRequest],
        context: grpc.ServicerContext,
    ) -> Iterator[v1_pb2.ServerReflectionResponse]:
        """Each request as v1alpha, each answer back as v1 (the two encode identically)."""
        requests = (
            v1alpha_pb2.ServerReflectionRequest.FromString(request.SerializeToString())
            for request in request_iterator
        )
        for response in self._v1alpha.ServerReflectionInfo(requests, context):
            yield v1_pb2.ServerReflectionResponse.FromString(response.SerializeToString())


def enable(service_names: Iterable[str], server: grpc.Server) -> None:
    """Serve reflection v1 and v1alpha on ``server``, listing ``service_names`` and both of themselves."""
    listed = (*service_names, *SERVICE_NAMES)
    reflection_v1alpha.enable_server_reflection(listed, server)
    v1_pb2_grpc.add_ServerReflectionServicer_to_server(ReflectionV1Servicer(listed), server)
