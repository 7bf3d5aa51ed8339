# delegation-service image. Two stages on the same pinned base, so the venv built in the first runs
# unchanged (same interpreter path) in the second, which has no compiler, no grpcio-tools, no pip, no
# setuptools and no source tree. Every Python package comes from a lock file with hashes
# (requirements/*.txt, `make lock`), so two builds a week apart install the same bytes. Keys and config
# are never baked in: mount config.toml (and whatever key files it names) at /etc/delegation-service/.
#
#   docker build -t delegation-service .
#   docker run -p 50051:50051 -p 8080:8080 -v "$PWD/etc:/etc/delegation-service:ro" delegation-service
#
# `make image-test` builds it with docker or podman and checks it against a real Redis.

# ---------------------------------------------------------------------------------------------------
FROM python:3.11.14-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src

# Build tools, in a venv of their own that never reaches the runtime image: the stub generator
# (grpcio-tools, pinned with grpcio) and setuptools, the project's build backend.
COPY requirements/ requirements/
RUN python -m venv /opt/build \
    && /opt/build/bin/pip install --no-cache-dir --require-hashes -r requirements/build.txt

# The runtime venv has no pip: the build venv's pip installs into it (--python). Dependencies first,
# so this layer is reused while only the code changes. Every runtime dependency ships wheels for
# CPython 3.11 on amd64 and arm64 (--only-binary): no compiler needed.
RUN python -m venv --without-pip /opt/venv \
    && /opt/build/bin/pip --python /opt/venv/bin/python install --no-cache-dir --require-hashes \
        --only-binary :all: -r requirements/image.txt

COPY pyproject.toml README.md ./
COPY scripts/ scripts/
COPY protos/ protos/
RUN scripts/gen-protos /opt/build/bin/python

COPY delegation_service/ delegation_service/
# A wheel built with the locked setuptools (no build isolation: nothing unpinned is fetched), then a
# regular install of it: the generated delegation/ package and delegation_service/ land in the venv's
# site-packages. Smoke check, isolated (-I) so the source tree cannot stand in for the install; it reads
# the Redis scripts too (package data: lua/*.lua), so a wheel without them fails the build.
RUN /opt/build/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /tmp/dist . \
    && /opt/build/bin/pip --python /opt/venv/bin/python install --no-cache-dir --no-deps /tmp/dist/*.whl \
    && /opt/venv/bin/python -I -c "import delegation_service.cli, delegation_service.client, delegation.v1.delegation_pb2_grpc, \
        delegation_service.adapters.redis.scripts as s; [s.source(name) for name in s.HELPERS]" \
    && if /opt/venv/bin/python -I -c "import pip" 2>/dev/null || /opt/venv/bin/python -I -c "import setuptools" 2>/dev/null; then \
        echo "the runtime venv must not hold pip or setuptools" >&2; exit 1; fi

# ---------------------------------------------------------------------------------------------------
FROM python:3.11.14-slim-bookworm AS runtime

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="delegation-service" \
      org.opencontainers.image.description="Mint narrower child tokens from an access token, and revoke them at any scale (gRPC, Redis)." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.14-slim-bookworm"

# A fixed UID/GID, so mounted config and key files can be owned or granted to it on the host.
ARG APP_UID=10001
RUN groupadd --system --gid "${APP_UID}" delegation \
    && useradd --system --uid "${APP_UID}" --gid delegation --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin delegation

COPY --from=builder /opt/venv /opt/venv

# 50051: gRPC (delegation.v1, grpc.health.v1, reflection); 8080: the admin HTTP port (/metrics,
# /.well-known/jwks.json, /.well-known/oauth-authorization-server, /livez, /readyz). Outside a
# container both default to 127.0.0.1; in one, loopback is the container's own, so the image listens
# on every interface and `docker run -p` publishes them. These are environment overrides, which win
# over config.toml: to move a port, set the variable (-e DELEGATION_SERVER_LISTEN=0.0.0.0:6000).
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DELEGATION_SERVER_LISTEN=0.0.0.0:50051 \
    DELEGATION_ADMIN_LISTEN=0.0.0.0:8080

USER ${APP_UID}:${APP_UID}

EXPOSE 50051 8080

# The probe reads the same config and environment as the server, so it follows its ports and TLS: it
# asks the admin port's /readyz (the gRPC health status, over plain HTTP whatever TLS the gRPC port
# uses), or gRPC health on server.listen when the admin port is off.
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["delegation-service", "health", "--config", "/etc/delegation-service/config.toml"]

# The server drains in-flight RPCs on SIGTERM; exec-form ENTRYPOINT makes it PID 1 and lets it get it.
STOPSIGNAL SIGTERM
ENTRYPOINT ["delegation-service"]
CMD ["serve", "--config", "/etc/delegation-service/config.toml"]
