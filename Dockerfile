# Ultrabase Doctor: one image for both services (`exporter` and `actions`).
#
#   docker build -t ultrabase-doctor:0.1.0 .        (docker compose build does the same)
#
# Stages: `dockercli` (the docker CLI and the Compose v2 plugin, static Go binaries from the
# official CLI image), `build` (a virtualenv with the package and its dependencies), and the
# runtime image (python:3.11-slim with that virtualenv, no compiler, no pip cache).
# Debian's docker.io would drag in dockerd and containerd, and Debian's docker-compose is
# v1, which rejects the top-level `name:` of Ultrabase's compose files: hence the CLI stage.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG DOCKER_CLI_IMAGE=docker:27.5.1-cli

FROM ${DOCKER_CLI_IMAGE} AS dockercli

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
WORKDIR /src
# Only what the distribution is built from (see .dockerignore): README.md is its readme.
COPY pyproject.toml README.md ./
COPY exporter ./exporter
COPY actions ./actions
RUN /opt/venv/bin/pip install . \
 && /opt/venv/bin/ultrabase-doctor --version

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="ultrabase-doctor" \
      org.opencontainers.image.description="Diagnostics, metrics and safe repair for Supabase instances managed by Ultrabase" \
      org.opencontainers.image.licenses="MIT"

# The docker CLI and `docker compose` for the actions service, which recreates instance
# services with compose; `docker-compose` is the same v2 binary, for the tool's fallback.
COPY --from=dockercli /usr/local/bin/docker /usr/local/bin/docker
COPY --from=dockercli /usr/local/libexec/docker/cli-plugins/docker-compose \
     /usr/local/libexec/docker/cli-plugins/docker-compose
RUN ln -s /usr/local/libexec/docker/cli-plugins/docker-compose /usr/local/bin/docker-compose

COPY --from=build /opt/venv /opt/venv
COPY deploy/healthcheck.py /usr/local/bin/ultrabase-doctor-healthcheck

# A fixed non-root uid/gid (10001): the exporter runs as it (Docker only through
# engine-proxy's unix socket, read-only instance files), and it owns the SQLite store. The
# actions service overrides the user to root in docker-compose.yml, because it drives the
# real Docker socket and rewrites the manager's root-owned files (deploy/README.md).
# /run/ultrabase-doctor holds engine-proxy's socket: root's, traversable by group 10001
# only; the engine-api volume mounted there takes this owner and mode when it is created.
RUN groupadd --system --gid 10001 doctor \
 && useradd --system --uid 10001 --gid doctor --no-create-home \
        --home-dir /var/lib/ultrabase-doctor --shell /usr/sbin/nologin doctor \
 && install -d -o doctor -g doctor -m 0700 /var/lib/ultrabase-doctor \
 && install -d -m 0755 /etc/ultrabase-doctor \
 && install -d -o root -g doctor -m 0750 /run/ultrabase-doctor \
 && chmod 0755 /usr/local/bin/ultrabase-doctor-healthcheck \
 && docker --version && docker compose version && docker-compose version \
 && /opt/venv/bin/ultrabase-doctor --version

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ULTRABASE_DOCTOR_CONFIG=/etc/ultrabase-doctor/config.yaml \
    DOCKER_CONFIG=/tmp/.docker

USER 10001:10001
# The store lives in /var/lib/ultrabase-doctor: mount a named volume there (docker-compose.yml
# does). No VOLUME line, so one-off `docker run --rm ... diagnose` leaves no anonymous volume.
WORKDIR /var/lib/ultrabase-doctor
EXPOSE 9646 9647

# Probes the exporter's /healthz at the host and port its config file names (see
# deploy/healthcheck.py; 401 counts as alive when /healthz is protected). The actions
# service's healthcheck in docker-compose.yml passes `actions` instead.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["ultrabase-doctor-healthcheck"]

ENTRYPOINT ["ultrabase-doctor"]
CMD ["exporter", "--config", "/etc/ultrabase-doctor/config.yaml"]
