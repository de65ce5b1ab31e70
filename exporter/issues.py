"""Issue codes (stable API), their default severity, hint and repair, and the Issue type."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["critical", "warning", "info"]
SEVERITY_RANK: Mapping[str, int] = {"critical": 2, "warning": 1, "info": 0}


@dataclass(frozen=True)
class IssueSpec:
    """What the tool knows about one issue code before any evidence."""

    severity: Severity
    summary: str
    hint: str
    repair: str | None = None


# The catalogue is public contract: codes are never renamed or reused.
CATALOGUE: Mapping[str, IssueSpec] = {
    # discovery
    "INSTANCE_RECORD_INVALID": IssueSpec(
        "warning", "The registry record of this instance is malformed",
        "Fix the record in the Ultrabase registry (instances.json); the instance's other "
        "sources were still read."),
    "INSTANCE_FILES_MISSING": IssueSpec(
        "critical", "An instance file (env, compose or kong.yml) is missing or unreadable",
        "Restore the file from a backup (ultrabase-doctor backups) or re-render it with the "
        "manager; without it the instance cannot be recreated."),
    "CONFIG_DRIFT": IssueSpec(
        "warning", "Registry, files and running containers disagree",
        "The running containers use different values than the files on disk; the next "
        "recreation will change behaviour. Decide which is right and align the files.",
        "sync_config"),
    "DOCKER_UNREACHABLE": IssueSpec(
        "critical", "The Docker engine cannot be reached",
        "Check that dockerd runs and that the socket or endpoint in docker.base_url is "
        "readable by this process."),
    # container_status
    "CONTAINER_MISSING": IssueSpec(
        "critical", "An expected container does not exist",
        "Recreate it with compose (up -d --no-deps SERVICE); data in bind mounts is kept.",
        "recreate_container"),
    "CONTAINER_NOT_RUNNING": IssueSpec(
        "critical", "A container exists but is not running",
        "Start it; if it exits again, read its logs (diagnostic-logs) for the reason.",
        "start_container"),
    "CONTAINER_UNHEALTHY": IssueSpec(
        "warning", "Docker reports the container's healthcheck as failing",
        "Read the healthcheck output in the evidence and the component's logs; a restart "
        "helps only when the cause is inside the container.", "restart_component"),
    "CONTAINER_CRASH_LOOP": IssueSpec(
        "critical", "The container keeps restarting",
        "Its last log lines give the reason; fix that first (a restart will not).",
        "restart_component"),
    "CONTAINER_OOM_KILLED": IssueSpec(
        "warning", "The container was killed for running out of memory",
        "Raise its memory limit or find what grew; check the host's free memory."),
    # service_health
    "COMPONENT_UNHEALTHY": IssueSpec(
        "warning", "The component answers its health probe with an error",
        "Read the component's logs; restart it if the cause is transient.",
        "restart_component"),
    "COMPONENT_UNREACHABLE": IssueSpec(
        "critical", "The component does not answer its health probe",
        "The process may hang or not listen; check the container state and logs.",
        "restart_component"),
    # database_connection
    "DB_UNREACHABLE": IssueSpec(
        "critical", "The database does not accept connections",
        "Check the db container and its logs; auth, rest, storage and realtime depend on it.",
        "start_container"),
    "DB_AUTH_FAILED": IssueSpec(
        "critical", "The database rejects the configured superuser password",
        "The data directory was probably initialised with another password; set it back "
        "with ALTER ROLE or update the instance's configured password."),
    "DB_ROLE_PASSWORD_MISMATCH": IssueSpec(
        "critical", "A Supabase service role cannot log in with the password its service uses",
        "Sync the role passwords to the configured one (repair sync_db_role_passwords), "
        "then restart the services that use them.", "sync_db_role_passwords"),
    "DB_CONNECTIONS_HIGH": IssueSpec(
        "warning", "The database is close to max_connections",
        "Find the client holding connections (pg_stat_activity) or use the pooler."),
    "DB_SCHEMA_MISSING": IssueSpec(
        "critical", "A schema Supabase needs (auth) is missing",
        "GoTrue creates its schema at start; check auth's logs for migration errors."),
    # api_endpoints
    "GATEWAY_UNREACHABLE": IssueSpec(
        "critical", "The API gateway (Kong) does not answer on its published port",
        "Check the kong container and that the port is published on the host.",
        "start_container"),
    "GATEWAY_KEY_REJECTED": IssueSpec(
        "critical", "Kong rejects the instance's own API key",
        "kong.yml's consumer keys differ from the keys clients use; align kong.yml with the "
        "env file and restart kong.", "sync_gateway_keys"),
    "GATEWAY_UPSTREAM_ERROR": IssueSpec(
        "critical", "Kong cannot reach the service behind a route",
        "The upstream container is down, hangs or is not resolvable in the compose network.",
        "restart_component"),
    "ENDPOINT_SLOW": IssueSpec(
        "warning", "An endpoint answers slower than the configured threshold",
        "Look at the component's load and its database."),
    # auth_service
    "AUTH_UNHEALTHY": IssueSpec(
        "critical", "GoTrue does not report healthy",
        "Read auth's logs; a DB login failure or a bad JWT setting stops it at start.",
        "restart_component"),
    "AUTH_USER_CREATE_FAILED": IssueSpec(
        "critical", "Creating a user through the gateway fails (Studio: 'Failed to create user')",
        "Follow the root cause: gateway, key, JWT secret or auth's database."),
    "AUTH_DB_CONNECTION_FAILED": IssueSpec(
        "critical", "GoTrue's own database DSN cannot log in",
        "Compare supabase_auth_admin's password with GOTRUE_DB_DATABASE_URL.",
        "sync_db_role_passwords"),
    "JWT_SECRET_MISMATCH": IssueSpec(
        "critical", "An API key is not signed with the JWT secret auth uses",
        "Regenerate the anon and service keys from the instance's JWT secret "
        "(repair regenerate_jwt_keys, needs confirm) and update client apps.",
        "regenerate_jwt_keys"),
    "JWT_KEY_EXPIRED": IssueSpec(
        "critical", "An API key has expired",
        "Regenerate the keys (repair regenerate_jwt_keys, needs confirm) and update client "
        "apps.", "regenerate_jwt_keys"),
    "JWT_KEY_EXPIRING": IssueSpec(
        "warning", "An API key expires soon",
        "Plan a key rotation (repair regenerate_jwt_keys) before it expires.",
        "regenerate_jwt_keys"),
    "JWT_SECRET_WEAK": IssueSpec(
        "critical", "The JWT secret is shorter than 32 bytes, so PostgREST rejects every JWT",
        "PostgREST v12 cannot verify HS256 keys with a secret under 32 bytes: every request "
        "carrying a JWT (supabase-js sends the anon key as one) gets 401 PGRST301, and v13 "
        "refuses to start. Set a random secret of at least 32 characters everywhere the "
        "instance uses it (auth, rest, storage, realtime, ...), regenerate the anon and "
        "service keys with it, recreate the services and update client apps."),
    # disk_usage
    "DISK_SPACE_LOW": IssueSpec(
        "warning", "Free space on the instance's filesystem is low",
        "Free space or grow the filesystem; Postgres stops writing when it is full."),
    "DISK_SPACE_CRITICAL": IssueSpec(
        "critical", "Free space on the instance's filesystem is critically low",
        "Free space now; Postgres will refuse writes when the disk is full."),
    "VOLUME_MISSING": IssueSpec(
        "critical", "A bind-mounted volume directory is missing on the host",
        "Restore the directory from a backup; do not recreate the container before that, "
        "or it will start with an empty directory."),
    "LOGS_OVERSIZED": IssueSpec(
        "warning", "Container log files are very large",
        "Configure Docker log rotation (max-size, max-file)."),
    # network_connectivity
    "PORT_NOT_LISTENING": IssueSpec(
        "critical", "A published port does not accept connections on 127.0.0.1",
        "Check that the container runs and publishes the port on IPv4 as well as IPv6.",
        "start_container"),
    "PORT_CONFLICT": IssueSpec(
        "critical", "A port this instance publishes is held by another process or instance",
        "Stop the other holder or change this instance's port; then start the container."),
    "NETWORK_MISSING": IssueSpec(
        "critical", "The compose network is missing or a container is not attached",
        "Recreate the affected services with compose.", "recreate_container"),
    "INTERNAL_LINK_DOWN": IssueSpec(
        "critical", "A service cannot reach another inside the compose network",
        "Check DNS names and that the target container runs and listens. When the target "
        "answers at its container name but not at its service name (evidence ends_healthy: "
        "the link is at fault, not its ends), the container is on the network without the "
        "alias compose gave it (`docker network disconnect`/`connect` without --alias does "
        "that): recreate it with compose (repair recreate_container, offered then), which "
        "attaches it with its aliases; kong is restarted after, as it keeps a name error "
        "for 30 s."),
    # logs
    "LOG_ERROR_SPIKE": IssueSpec(
        "warning", "A component logged many errors recently",
        "Read them with diagnostic-logs?level=error."),
    # appended later (codes are never reordered)
    "AUTH_MIGRATION_FAILED": IssueSpec(
        "critical", "GoTrue's database migrations fail, so it stops at start",
        "GoTrue logs in but its migration SQL fails: the auth schema is missing or its role "
        "lacks rights on it (SQLSTATE 3F000, 42501), or an object is owned by another role "
        "(e.g. after a dump restored as postgres). The message names the SQL error; fix the "
        "schema or grant supabase_auth_admin its rights back, then restart auth. Password "
        "changes and restarts alone do not help."),
    "AUTH_CONFIG_INVALID": IssueSpec(
        "critical", "GoTrue cannot load its configuration, so it stops at start",
        "The message names the GOTRUE_* setting: a value its type rejects, a required one "
        "missing, or one set but empty (GoTrue treats an empty value as set, so an empty "
        "bool, number or JWT secret is fatal). Fix it in the compose file (and the .env it "
        "was rendered from), then recreate auth; a restart keeps the bad value."),
    "REST_JWT_REJECTED": IssueSpec(
        "critical", "PostgREST rejects the instance's anon key, so every client request fails",
        "PostgREST verifies the key with PGRST_JWT_SECRET: it rejects it when that secret "
        "differs from the one that signed the key, or (v12) when it is shorter than 32 bytes. "
        "Compare the secret rest runs with against the keys' (see JWT_SECRET_MISMATCH and "
        "JWT_SECRET_WEAK)."),
    "GATEWAY_UPSTREAM_STALE": IssueSpec(
        "critical", "Kong proxies to an outdated address of a service that is up",
        "Kong keeps each DNS answer for its TTL (Docker's DNS answers with 600 s): a service "
        "recreated since then has a new address that Kong does not know yet. Restart kong "
        "so it resolves the name again (repair restart_component on kong), or wait out the "
        "TTL; restarting the service itself does not help.", "restart_component"),
    # The registry's word on the instance's life: expected states, never alerts.
    "INSTANCE_CREATING": IssueSpec(
        "info", "The manager is still creating this instance",
        "The registry says status \"creating\": the manager is running generate.bash, whose "
        "compose up pulls the images and starts the containers (5-10 minutes the first time). "
        "Components that are down meanwhile are expected: nothing alerts and nothing is "
        "repaired. If it stays so long after the manager gave up (its log says why), start "
        "the instance: `docker compose -f docker-compose-<id>.yml --env-file .env-<id> up -d` "
        "in supabase-core."),
    "INSTANCE_STOPPED": IssueSpec(
        "info", "The instance was stopped by its owner",
        "The registry says status \"stopped\" and no container runs: the manager's Stop runs "
        "compose down, which removes the containers and keeps the data. Nothing is broken and "
        "nothing alerts; start it from the manager (or `docker compose -f "
        "docker-compose-<id>.yml --env-file .env-<id> up -d` in supabase-core) when wanted."),
    "INSTANCE_NOT_STARTED": IssueSpec(
        "info", "The instance has never been started",
        "No container of it exists and its db/data directory was never created: Docker "
        "creates volumes-<id>/db/data and storage at the first start, so nothing is lost and "
        "nothing needs restoring. Start it (the manager's Start, or `docker compose -f "
        "docker-compose-<id>.yml --env-file .env-<id> up -d` in supabase-core); if its first "
        "start failed, the manager's log and the registry's error_message say why."),
    # The instance's own exposure, as the manager's template leaves it.
    "PORT_EXPOSED": IssueSpec(
        "warning", "A port of the instance is published on every interface of the host",
        "The manager's template publishes kong (the API and Studio's login), the db, the "
        "pooler and analytics as `PORT:TARGET`, which Docker binds on 0.0.0.0 and [::]: "
        "anyone who reaches the host reaches them, past the host's firewall rules for "
        "INPUT. In supabase-core/docker-compose.yml (for new instances) and each "
        "docker-compose-<id>.yml, prefix the ports with 127.0.0.1: (e.g. "
        "`\"127.0.0.1:${POSTGRES_PORT_EXT}:${POSTGRES_PORT}\"`) or the one address clients "
        "use, put a reverse proxy with TLS in front of kong, then recreate the service "
        "(compose up -d SERVICE). The doctor's config editor cannot change ports."),
    "DEFAULT_CREDENTIALS": IssueSpec(
        "warning", "The instance uses a default or placeholder credential",
        "The manager creates every instance with the Studio login admin/admin "
        "(server.js generateInstanceConfig) and renders the logflare keys as the placeholder "
        "your_logflare_key (generate.bash), which anyone can guess. Change the dashboard "
        "login with the doctor's config editor (PUT /api/instances/<id>/config, fields "
        "dashboard_username and dashboard_password: it updates the registry, .env, compose "
        "file and kong.yml and recreates kong and studio); set a random LOGFLARE_API_KEY and "
        "LOGFLARE_LOGGER_BACKEND_API_KEY in the .env-<id> and compose file (and in "
        "generate.bash for new instances), then recreate analytics, vector and studio."),
}


@dataclass(frozen=True)
class Issue:
    """One finding: a stable code, where it is, and why the tool believes it."""

    code: str
    severity: Severity
    component: str | None
    check: str
    message: str
    evidence: Mapping[str, Any] = field(default_factory=dict)
    hint: str = ""
    repair: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The issue in the public JSON shape."""
        return {
            "code": self.code,
            "severity": self.severity,
            "component": self.component,
            "check": self.check,
            "message": self.message,
            "evidence": dict(self.evidence),
            "hint": self.hint,
            "repair": self.repair,
        }


def make_issue(
    code: str,
    *,
    check: str,
    message: str,
    component: str | None = None,
    evidence: Mapping[str, Any] | None = None,
    severity: Severity | None = None,
    repair: str | Literal[False] | None = False,
) -> Issue:
    """An Issue with severity, hint and repair filled from the catalogue."""
    spec = CATALOGUE[code]
    return Issue(
        code=code,
        severity=severity or spec.severity,
        component=component,
        check=check,
        message=message,
        evidence=dict(evidence or {}),
        hint=spec.hint,
        repair=spec.repair if repair is False else repair,
    )
