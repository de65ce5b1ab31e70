"""Running the action API alone (`ultrabase-doctor actions`) or with the exporter (`serve`).

`serve_all` runs both apps in one process as two waitress servers on their own ports
(config.exporter and config.actions, the same URLs as when they run apart), sharing one
Docker client, diagnostics engine, store and metrics renderer. Both servers register in
one socket map and are driven by one I/O loop, but each keeps its own worker threads: a
`curl ...?wait=true` blocking an action worker for minutes can never delay a Prometheus
scrape of the exporter. A path-based dispatcher was not an option: both apps serve
/metrics and /healthz.

Rate-limit counters live in memory (see actions.blueprints.common.RateLimits): they are per
process and start from zero after a restart. Operation locks, the audit log and the
auto-repair budget live in the store and hold across processes and restarts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from flask import Flask

from actions.alertmanager import AlertmanagerClient
from actions.app import create_app
from actions.backups import BackupStore
from actions.compose import ComposeRunner
from actions.context import ActionServices, Bodies
from actions.operations.backup import backup_body, restore_body
from actions.operations.config_edit import config_edit_body, current_config, validate_changes
from actions.operations.repair import RepairAction, build_plan, plan_repairs, repair_body
from actions.operations.restart import restart_service_body, safe_restart_body
from actions.operations.runner import Body, OperationRunner
from actions.store import ActionStore
from exporter.access import AccessControl
from exporter.config import Config
from exporter.diagnostic import Diagnostic
from exporter.discovery import Instance
from exporter.dockerhost import DockerHost
from exporter.engine import DiagnosticsEngine
from exporter.errors import ConfigError
from exporter.logs import LogAnalyzer
from exporter.metrics.render import MetricsRenderer
from exporter.redaction import install_fingerprint_key
from exporter.service import Listener, registry_owners, serve_until_stopped
from exporter.service import Running as ExporterRunning
from exporter.service import build as build_exporter
from exporter.store import InstanceInfo

log = logging.getLogger(__name__)


@dataclass
class ActionsRunning:
    """What `build` made, for tests and for clean shutdown."""

    services: ActionServices
    access: AccessControl
    app: Flask
    # What this build opened itself (and so closes); shared parts are the exporter's.
    owned: list[Any] = field(default_factory=list)

    def close(self) -> None:
        """Let running operations end, then close Alertmanager's client and what was opened here."""
        # Operations in flight finish (rollback included) before what they use is closed.
        self.services.runner.join()
        if self.services.alertmanager is not None:
            self.services.alertmanager.close()
        _close_all(self.owned)


def _close_all(items: list[Any]) -> None:
    """Close (or stop, for the renderer) what a build opened, newest first."""
    for item in reversed(items):
        if isinstance(item, MetricsRenderer):
            item.stop()
        else:
            item.close()


def default_bodies() -> Bodies:
    """The real operation bodies: restart, repair, config edits, backups."""

    def repair(actions: Sequence[RepairAction], confirm: bool) -> Body:
        return repair_body(actions, confirm=confirm)

    def plan_details(diagnostic: Diagnostic, instance: Instance) -> dict[str, Any]:
        full = build_plan(diagnostic, instance).to_dict()
        return {k: v for k, v in full.items() if k not in ("actions", "instance_id")}

    return Bodies(safe_restart=safe_restart_body, restart_service=restart_service_body,
                  plan_repairs=plan_repairs, repair=repair, config_edit=config_edit_body,
                  validate_changes=validate_changes, current_config=current_config,
                  backup=backup_body, restore=restore_body, plan_details=plan_details)


def make_access(config: Config) -> AccessControl:
    """Access control as the exporter builds it (same tokens, manager JWTs, scopes)."""
    users = config.api.manager_jwt.users_file if config.api.manager_jwt else None
    return AccessControl(config.api, users_file=users or config.ultrabase.users_file,
                         owners=lambda: registry_owners(config))


def build(config: Config, *, exporter: ExporterRunning | None = None,
          bodies: Bodies | None = None) -> ActionsRunning:
    """Every service the action API runs; shares the exporter's when it is given."""
    owned: list[Any] = []
    if exporter is not None:
        store, engine = _action_store(exporter), exporter.services.engine
        renderer, access = exporter.services.renderer, exporter.access
        docker = engine.docker
        analyzer = exporter.services.analyzer
    else:
        docker = DockerHost(config.docker.base_url, timeout=config.docker.timeout_seconds)
        store = ActionStore(config.store.path, config.store.history_limit)
        install_fingerprint_key(config.store.path)
        engine = DiagnosticsEngine(config, docker, store)
        renderer = MetricsRenderer(store, config=config)
        access = make_access(config)
        analyzer = LogAnalyzer(docker, timeout=config.diagnostics.timeout_seconds)
        owned += [store, engine, renderer]
        found = engine.discover()
        store.set_instances([InstanceInfo(i.id, i.name, i.owner)
                             for i in found.instances.values()])
    alertmanager = AlertmanagerClient.from_config(config)
    try:
        backups = BackupStore(config.actions.backups_dir, config.actions.backup_retention)
        runner = OperationRunner(config, engine, store, docker,
                                 ComposeRunner.from_config(config), backups, alertmanager)
        svc = ActionServices(config=config, engine=engine, store=store, runner=runner,
                             backups=backups, renderer=renderer,
                             bodies=bodies or default_bodies(), alertmanager=alertmanager,
                             analyzer=analyzer)
        app = create_app(svc, access)
    except BaseException:
        if alertmanager is not None:
            alertmanager.close()
        _close_all(owned)
        raise
    return ActionsRunning(services=svc, access=access, app=app, owned=owned)


def _action_store(exporter: ExporterRunning) -> ActionStore:
    """The exporter's store, which the action API shares when it was built as one."""
    store = exporter.services.store
    if not isinstance(store, ActionStore):
        raise TypeError("the exporter shares its store only when built with an ActionStore")
    return store


def serve(config: Config) -> int:
    """Serve the action API until SIGTERM or Ctrl-C."""
    running = build(config)
    return serve_until_stopped([Listener(running.app, config.actions.host, config.actions.port)],
                               label="action API", start=running.services.renderer.start,
                               close=running.close, max_body=config.api.max_body_bytes)


def serve_all(config: Config) -> int:
    """Serve the exporter and the action API from one process, each on its own port."""
    if config.exporter.port == config.actions.port:
        raise ConfigError("exporter.port and actions.port must differ to serve both")
    exporter = build_exporter(config, store_type=ActionStore)
    try:
        actions = build(config, exporter=exporter)
    except BaseException:
        exporter.close()
        raise

    def close() -> None:
        actions.close()
        exporter.close()

    return serve_until_stopped(
        [Listener(exporter.app, config.exporter.host, config.exporter.port),
         Listener(actions.app, config.actions.host, config.actions.port)],
        label="exporter and action API", start=exporter.start, close=close,
        max_body=config.api.max_body_bytes)
