# syntax=docker/dockerfile:1
# dwasm service image: `dwasm serve` on 0.0.0.0:8080 as an unprivileged user.
#
# Build: docker build -t dwasm:0.1.0 .
# Run:   docker run -p 8080:8080 -e DWASM_DATABASE_URL=postgresql://... dwasm:0.1.0
# Without DWASM_DATABASE_URL the service starts an embedded PostgreSQL in DWASM_DATA_DIR
# (/var/lib/dwasm here); the Helm chart (helm/dwasm) always points it at an external database.

# Stage 1: build the wheel (and the wheels of its dependencies) with the build tools that the
# final image does not need.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY vm ./vm
COPY app ./app
COPY forwarding ./forwarding
COPY topology ./topology
COPY migrations ./migrations
RUN pip wheel --wheel-dir /wheels .

# Stage 2: the runtime, with only the installed package.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DWASM_HOST=0.0.0.0 \
    DWASM_PORT=8080 \
    DWASM_DATA_DIR=/var/lib/dwasm
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels dwasm \
    && groupadd --system --gid 10001 dwasm \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/dwasm --create-home \
       --shell /usr/sbin/nologin dwasm
WORKDIR /var/lib/dwasm
USER 10001:10001
EXPOSE 8080
# /healthz is liveness only (the process answers); Kubernetes probes /readyz separately.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('DWASM_PORT', '8080'), timeout=4)"]
ENTRYPOINT ["dwasm", "serve", "--host", "0.0.0.0"]
