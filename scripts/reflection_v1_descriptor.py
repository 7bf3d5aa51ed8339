"""Write the descriptor of gRPC server reflection v1 (``grpc.reflection.v1``) for protoc.

grpcio-reflection ships only the v1alpha stubs; v1 is the same protocol promoted unchanged (the same
messages, fields and numbers, in package ``grpc.reflection.v1``). So its descriptor is v1alpha's with
the package renamed, and scripts/gen-protos feeds it to protoc (``--descriptor_set_in``) to generate
real v1 stubs at build time, with no copy of a third-party .proto in the repository.

Usage: python scripts/reflection_v1_descriptor.py OUT_FILE  (writes a FileDescriptorSet)
"""

from __future__ import annotations

import sys
from pathlib import Path

from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

V1ALPHA = "grpc.reflection.v1alpha"
V1 = "grpc.reflection.v1"
# Under the generated package: protoc's Python output follows the file name, and a name under grpc/
# would shadow the grpc package itself.
FILE_NAME = "delegation/reflection/v1/reflection.proto"


def v1_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """The v1alpha file descriptor, moved to package grpc.reflection.v1."""
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    if proto.dependency:
        raise SystemExit(f"reflection v1alpha now imports {list(proto.dependency)}: update this script")
    proto.name = FILE_NAME
    proto.package = V1
    proto.ClearField("options")
    for message in proto.message_type:
        for item in message.field:
            if item.type_name.startswith(f".{V1ALPHA}."):
                item.type_name = f".{V1}." + item.type_name.removeprefix(f".{V1ALPHA}.")
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(f".{V1ALPHA}.", f".{V1}.")
            method.output_type = method.output_type.replace(f".{V1ALPHA}.", f".{V1}.")
    leftover = [t for m in proto.message_type for f in m.field if V1ALPHA in (t := f.type_name)]
    if leftover:
        raise SystemExit(f"unexpected v1alpha references left: {leftover}")
    return proto


def main() -> None:
    """Write the FileDescriptorSet to the file named on the command line."""
    out = Path(sys.argv[1])
    out.write_bytes(descriptor_pb2.FileDescriptorSet(file=[v1_descriptor()]).SerializeToString())


if __name__ == "__main__":
    main()
