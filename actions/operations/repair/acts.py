"""The container and role-password acts of a repair, and the table of every act.

Each act does one planned action and records its undo steps in the Journal; the key acts
are in keys.py.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psycopg
from psycopg import sql

from actions.operations.repair.keys import act_regenerate_keys, act_sync_gateway
from actions.operations.repair.plan import (
    RECREATE,
    REGENERATE_KEYS,
    RESTART,
    START,
    SYNC_GATEWAY,
    SYNC_ROLES,
    RepairAction,
    RepairError,
    require_confirm,
)
from actions.operations.repair.run import ActFn, Journal, RepairSession, run_actions, state_of
from actions.operations.runner import Body, OperationContext
from exporter.checks.database import role_logins
from exporter.checks.listener import withheld as withheld_login
from exporter.discovery.model import Instance
from exporter.pg import ADMIN_USERS, DbLogin, LoginFailedError, connect, instance_dbname
from exporter.redaction import fingerprint

# Services Kong's routes lead to (Ultrabase's kong.yml). Kong keeps each one's address for
# its DNS TTL (600 s with Docker's DNS), and Docker gives a starting container the lowest
# free address, not always its old one.
KONG_UPSTREAMS = frozenset({"auth", "rest", "storage", "meta", "studio", "functions",
                            "analytics", "realtime"})


def _address(runner: RepairSession, component: str) -> str | None:
    """The component's address on the instance network (read, never dialled)."""
    item = runner.container(component)
    if item is None:
        return None
    return item.addresses.get(f"{runner.ctx.instance.compose_project}_default") or None


def _kong_follows(runner: RepairSession, component: str, before: str | None,
                  detail: dict[str, Any], name_lost: bool = False) -> None:
    """Restart kong when the component came back at another address than it had, or
    when its name did not resolve before (name_lost).

    Kong would keep proxying to the old address until its DNS answer expires, and keeps a
    name error for KONG_DNS_NOT_FOUND_TTL (30 s): restarting the service alone does not
    reach it through the gateway (GATEWAY_UPSTREAM_STALE).
    """
    if component not in KONG_UPSTREAMS or (before is None and not name_lost):
        return
    after = _address(runner, component)
    kong = runner.container("kong")
    if after is None or (after == before and not name_lost) or kong is None \
            or not state_of(kong).startswith("running"):
        return
    runner.restart_and_wait("kong")
    detail["kong_restarted"] = (f"kong restarted to resolve {component}'s name again"
                                if name_lost else f"{component} moved from {before} to "
                                f"{after}; kong restarted to resolve it again")


def act_start(runner: RepairSession, action: RepairAction, journal: Journal,
              detail: dict[str, Any]) -> None:
    """Start (or unpause) the stopped container; undo: put it back as it was."""
    component = str(action.component)
    item = runner.need(component)
    docker = runner.docker
    before = state_of(item)
    detail["state_before"] = before
    if before == "paused":
        journal.services.append((f"pause {component} again", lambda: docker.pause(item.id)))
        docker.unpause(item.id)
    elif before.startswith("running"):
        detail["note"] = "already running"
    else:
        timeout = runner.stop_timeout
        journal.services.append((f"stop {component} again",
                                 lambda: docker.stop(item.id, timeout)))
        docker.start(item.id)
    detail["state_after"] = runner.wait_healthy([component])[component]


def act_recreate(runner: RepairSession, action: RepairAction, journal: Journal,
                 detail: dict[str, Any]) -> None:
    """compose up --no-deps the service; undo: stop what was created (never remove it)."""
    component = str(action.component)
    before = state_of(runner.container(component))
    detail["state_before"] = before
    instance = runner.instance()
    if not before.startswith("running"):
        # It was absent or down before: down again is where it was. A container that ran
        # (detached from its network) cannot be brought back once replaced: it stays up.
        journal.services.append((f"stop the recreated {component}",
                                 lambda: _stop_if_present(runner, component)))
    address = _address(runner, component)
    runner.docker.recreate(instance, [component])
    detail["state_after"] = runner.wait_healthy([component])[component]
    # Kong's link to it was down: Kong holds "not found" for its name (30 s) if it asked.
    _kong_follows(runner, component, address, detail,
                  name_lost="INTERNAL_LINK_DOWN" in action.issue_codes)


def _stop_if_present(runner: RepairSession, component: str) -> None:
    item = runner.container(component)
    if item is not None and state_of(item) != "exited":
        runner.docker.stop(item.id, runner.stop_timeout)


def act_restart(runner: RepairSession, action: RepairAction, journal: Journal,
                detail: dict[str, Any]) -> None:
    """Restart the container (a restart changes no file or data: nothing to undo)."""
    component = str(action.component)
    detail["state_before"] = state_of(runner.need(component))
    address = _address(runner, component)
    detail["state_after"] = runner.restart_and_wait(component)
    _kong_follows(runner, component, address, detail)


# role passwords ----------------------------------------------------------------------------


def _superuser(instance: Instance, timeout: float) -> psycopg.Connection[Any]:
    """A superuser session on the published db port with the instance's password.

    Setting role passwords needs one (pg_authid and the service roles' passwords):
    supabase_admin on supabase/postgres, where postgres is demoted; any other admin user
    is tried in case the instance's image still makes it a superuser.
    """
    password = instance.credentials.postgres_password
    port = instance.endpoints.db_port
    if not password or port is None:
        raise RepairError("the instance's postgres password or db port is unknown")
    withheld = withheld_login(instance, "db", port, listing=False)
    if withheld:
        raise RepairError(f"no login tried: {withheld}")
    dbname = instance_dbname(instance)
    failures: list[str] = []
    for user in ADMIN_USERS:
        try:
            conn = connect(instance.endpoints.db_host, port, DbLogin(user, password, dbname),
                           timeout)
        except LoginFailedError as exc:
            failures.append(f"{user}: {exc.result.reason}")
            continue
        try:
            row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
                               ).fetchone()
            if not (row and row[0]):
                conn.close()
                failures.append(f"{user} logs in but is not a superuser")
                continue
            # The statement carries a password: keep it out of the server's log.
            conn.execute("SET log_statement = 'none'")
            conn.execute("SET log_min_duration_statement = -1")
        except psycopg.Error as exc:
            conn.close()
            failures.append(f"{user}: {str(exc).splitlines()[0][:200]}")
            continue
        return conn
    raise RepairError("no superuser session on the db: " + "; ".join(failures))


def _set_password(conn: psycopg.Connection[Any], role: str, password: str | None) -> None:
    """ALTER ROLE ... PASSWORD, composed (never formatted); a SCRAM/MD5 hash is kept as is."""
    value: sql.Composable = sql.Literal(password) if password is not None else sql.SQL("NULL")
    conn.execute(sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(sql.Identifier(role), value))


def act_sync_roles(runner: RepairSession, action: RepairAction, journal: Journal,
                   detail: dict[str, Any]) -> None:
    """Set each role's password to the one its service uses; undo: put the old hashes back."""
    instance = runner.instance()
    dbname = instance_dbname(instance)
    wanted = {rl.login.user: rl for rl in role_logins(instance, dbname)
              if not action.roles or rl.login.user in action.roles}
    missing = [r for r in action.roles if r not in wanted]
    if missing:
        raise RepairError(f"no service is known to log in as {', '.join(missing)}")
    runner.secret(*(rl.login.password for rl in wanted.values()))
    timeout = runner.ctx.config.diagnostics.timeout_seconds
    synced: dict[str, Any] = {}
    with _superuser(instance, timeout) as conn:
        for role, login in wanted.items():
            row = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s",
                               (role,)).fetchone()
            if row is None:
                raise RepairError(f"role {role} does not exist")
            previous: str | None = row[0]
            journal.data.append((f"set {role}'s password back",
                                 _password_undo(instance, role, previous, timeout)))
            _set_password(conn, role, login.login.password)
            synced[role] = {"source": login.password_source,
                            "password_fingerprint": fingerprint(login.login.password)}
    detail["roles"] = synced


def _password_undo(instance: Instance, role: str, previous: str | None,
                   timeout: float) -> Callable[[], None]:
    def undo() -> None:
        with _superuser(instance, timeout) as conn:
            _set_password(conn, role, previous)
    return undo




ACTS: Mapping[str, ActFn] = {
    START: act_start,
    RECREATE: act_recreate,
    RESTART: act_restart,
    SYNC_ROLES: act_sync_roles,
    REGENERATE_KEYS: act_regenerate_keys,
    SYNC_GATEWAY: act_sync_gateway,
}



def repair_body(actions: Sequence[RepairAction], *, confirm: bool) -> Body:
    """The operation body running these actions in order (confirm checked before anything)."""
    chosen = tuple(actions)
    require_confirm(chosen, confirm)

    def body(ctx: OperationContext) -> Mapping[str, Any]:
        return run_actions(ctx, chosen, ACTS)

    return body
