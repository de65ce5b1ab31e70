"""Running the exporter: wiring services from the config and serving them with waitress."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from flask import Flask
from waitress.server import BaseWSGIServer, MultiSocketServer

from exporter.access import AccessControl
from exporter.config import Config
from exporter.discovery.registry import read_registry
from exporter.dockerhost import DockerHost
from exporter.engine import DiagnosticsEngine
from exporter.errors import DoctorError
from exporter.logs import LogAnalyzer
from exporter.metrics.render import MetricsRenderer
from exporter.redaction import install_fingerprint_key
from exporter.scheduler import DiagnosticScheduler, instance_infos
from exporter.store import Store, apply_retention
from exporter.watch.runner import Watch
from exporter.web.app import create_app
from exporter.web.context import Services
from exporter.web.wsgi import Listener, create_servers

__all__ = ["Listener", "Running", "build", "registry_owners", "serve", "serve_until_stopped"]

log = logging.getLogger(__name__)


@dataclass
class Running:
    """What `build` made, for tests and for clean shutdown."""

    services: Services
    access: AccessControl
    app: Flask

    watch: Watch | None = None

    def start(self) -> None:
        """Start the scheduler, the watch and the renderer's background re-rendering."""
        if self.services.scheduler:
            self.services.scheduler.start()
        if self.watch:
            self.watch.start()
        # Re-render soon after each store change, so scrapes only copy bytes.
        self.services.renderer.start()

    def close(self) -> None:
        """Stop the scheduler, the watch, the engine's pools and the store."""
        if self.services.scheduler:
            self.services.scheduler.shutdown()
        if self.watch:
            self.watch.close()
        self.services.renderer.stop()
        self.services.engine.close()
        self.services.store.close()


def registry_owners(config: Config) -> Mapping[str, str | None]:
    """Instance id -> owner, from the Ultrabase registry (empty when there is none)."""
    if config.ultrabase.registry is None:
        return {}
    try:
        return {r.id: r.owner for r in read_registry(config.ultrabase.registry).records}
    except DoctorError as exc:
        log.warning("owners unknown: %s", exc)
        return {}


def build(config: Config, *, schedule: bool = True,
          store_type: type[Store] = Store) -> Running:
    """Every service the exporter runs, wired together (scheduler not yet started).

    store_type: the store to open (the action API's, when both run in one process).
    """
    docker = DockerHost(config.docker.base_url, timeout=config.docker.timeout_seconds)
    store = store_type(config.store.path, config.store.history_limit)
    install_fingerprint_key(config.store.path)
    engine = DiagnosticsEngine(config, docker, store)
    scheduler = None
    watch = Watch.build(engine, config.watch, store) if schedule else None
    if schedule:
        probe = watch.probe.run_once if watch and watch.probe else None
        scheduler = DiagnosticScheduler(
            engine, store, config.schedule.sweep_interval_seconds,
            sweep_enabled=config.schedule.enabled,
            min_instance_interval_seconds=config.schedule.min_instance_interval_seconds,
            housekeeping=lambda: apply_retention(store, config.store),
            probe=probe, probe_interval_seconds=config.watch.probe_interval_seconds)
        for saved in store.schedules():
            if saved.enabled:
                try:
                    scheduler.set_instance(saved.instance_id, saved.spec)
                except DoctorError as exc:
                    log.error("schedule of %s not restored: %s", saved.instance_id, exc)
    svc = Services(config=config, engine=engine, store=store,
                   renderer=MetricsRenderer(store, config=config),
                   analyzer=LogAnalyzer(docker, timeout=config.diagnostics.timeout_seconds),
                   scheduler=scheduler, watch=watch.status if watch else None)
    users = config.api.manager_jwt.users_file if config.api.manager_jwt else None
    access = AccessControl(config.api, users_file=users or config.ultrabase.users_file,
                           owners=lambda: registry_owners(config))
    began = datetime.now(UTC)
    found = engine.discover(fresh=True)
    store.set_instances(instance_infos(found), departed_before=began if found.complete else None)
    return Running(services=svc, access=access, app=create_app(svc, access), watch=watch)


@contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """Within the block, SIGTERM ends the process like Ctrl-C does: cleanly, via SystemExit."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def serve(config: Config) -> int:
    """Serve until SIGTERM or Ctrl-C; then stop the scheduler and close the store."""
    running = build(config)
    return serve_until_stopped([Listener(running.app, config.exporter.host,
                                         config.exporter.port)],
                               label="exporter", start=running.start, close=running.close,
                               max_body=config.api.max_body_bytes)


def serve_until_stopped(listeners: Sequence[Listener], *, label: str,
                        start: Callable[[], None], close: Callable[[], None],
                        max_body: int) -> int:
    """Serve every app with waitress until SIGTERM or Ctrl-C; close runs on every way out."""
    sockets: dict[int, Any] = {}  # one map: one I/O loop drives every server
    servers: list[BaseWSGIServer | MultiSocketServer]
    try:
        servers = create_servers(listeners, sockets, max_body=max_body)
    except BaseException:
        close()
        raise
    log.warning("%s listening on %s", label,
                ", ".join(f"http://{item.host}:{item.port}" for item in listeners))
    try:
        with terminate_on_sigterm():
            start()
            servers[-1].run()  # the loop serves every socket in the shared map
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        for server in servers:
            # The loop's own server stops its workers on exit; the others are told here.
            server.task_dispatcher.shutdown()
            with suppress(OSError):
                server.close()
        close()
        log.warning("%s stopped", label)
    return 0
