# syntax=docker/dockerfile:1
# delegation-service image. Two stages on the same pinned base, so the venv built in the first runs
# unchanged (same interpreter path) in the second, which has no compiler, no grpcio-tools and no
# source tree. Keys and config are never baked in: mount config.toml (and whatever key files it
# names) at /etc/delegation-service/ at run time.
#
#   docker build -t delegation-service .
#   docker run -p 50051:50051 -p 8080:8080 -v "$PWD/etc:/etc/delegation-service:ro" delegation-service

# ---------------------------------------------------------------------------------------------------
FROM python:3.11.14-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src

# Build dependencies: the stub generator, in a venv of its own that never reaches the runtime image.
# Its pins are read from pyproject.toml's dev extra, so grpcio-tools stays pinned with grpcio in one
# file. Every runtime dependency ships wheels for CPython 3.11 on amd64 and arm64: no compiler needed.
COPY pyproject.toml ./
COPY scripts/ scripts/
RUN python -m venv /opt/codegen \
    && python scripts/pyproject_requirements.py --extra dev --only grpcio-tools mypy-protobuf \
        > /tmp/codegen-requirements.txt \
    && python scripts/pyproject_requirements.py --only grpcio-reflection >> /tmp/codegen-requirements.txt \
    && /opt/codegen/bin/pip install --no-cache-dir -r /tmp/codegen-requirements.txt

# The runtime venv, dependencies first so this layer is reused while only the code changes.
RUN python -m venv /opt/venv \
    && python scripts/pyproject_requirements.py > /tmp/requirements.txt \
    && /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements.txt

COPY protos/ protos/
RUN scripts/gen-protos /opt/codegen/bin/python

COPY delegation_service/ delegation_service/
# The client helper (delegation_client) is part of the service's install too.
COPY clients/python/src/ clients/python/src/
# A regular (not editable) install: the generated delegation/ package and delegation_service/ are
# copied into the venv's site-packages.
# Smoke check, isolated (-I) so the source tree in the working directory cannot stand in for the install;
# it reads the Redis scripts too (package data: lua/*.lua), so a wheel without them fails the build.
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps . \
    && /opt/venv/bin/python -I -c "import delegation_service.cli, delegation_service.client, delegation.v1.delegation_pb2_grpc; \
from delegation_service.adapters.redis import scripts; [scripts.source(name) for name in scripts.HELPERS]"

# ---------------------------------------------------------------------------------------------------
FROM python:3.11.14-slim-bookworm AS runtime

# A fixed UID/GID, so mounted config and key files can be owned or granted to it on the host.
ARG APP_UID=10001
RUN groupadd --system --gid "${APP_UID}" delegation \
    && useradd --system --uid "${APP_UID}" --gid delegation --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin delegation

COPY --from=builder /opt/venv /opt/venv

ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

USER ${APP_UID}:${APP_UID}

# 50051: gRPC (delegation.v1, grpc.health.v1, reflection); 8080: the admin HTTP port (/metrics,
# /.well-known/jwks.json, /.well-known/oauth-authorization-server, /livez, /readyz). Both bind what
# config.toml says: use 0.0.0.0 there (server.listen, admin.listen) to publish them from a container.
EXPOSE 50051 8080

HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["delegation-service", "health"]

# The server drains in-flight RPCs on SIGTERM; exec-form ENTRYPOINT makes it PID 1 and lets it get it.
STOPSIGNAL SIGTERM
ENTRYPOINT ["delegation-service"]
CMD ["serve", "--config", "/etc/delegation-service/config.toml"]
