"""The Python client of delegation-service: generated stubs, the ``.proto`` files, and a small helper.

- ``delegation_client.v1.delegation_pb2`` / ``admin_pb2`` (messages) and ``*_pb2_grpc`` (stubs), with
  type stubs: this distribution's own, so it shares no file with the service's (``delegation.v1``).
- :class:`DelegationClient`: both services over one channel, a deadline on every call.
- :func:`error_details`: the ``ErrorInfo`` reason and the ``BadRequest`` violations of a failed call.
- :func:`proto_dir`: where the ``.proto`` files this package was generated from are installed, for
  tools that want them (``buf``, ``grpcurl -import-path``, other languages' generators).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from delegation_client._client import DelegationClient, ErrorDetails, error_details

__all__ = ["DelegationClient", "ErrorDetails", "error_details", "proto_dir"]


def proto_dir() -> Path:
    """The import root of the packaged ``.proto`` files (``<root>/delegation/v1/*.proto``)."""
    return Path(str(resources.files(__name__) / "protos"))
