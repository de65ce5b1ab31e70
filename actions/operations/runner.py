"""Runs operations: one per instance across processes, steps persisted as they progress.

`OperationRunner.submit` takes the instance's lock in the store (a second caller, in this
process or another, gets `OperationConflict` naming the running operation), saves the
operation, and runs its body in a background thread. The body records its progress through
`OperationContext.step`; each change is saved at once, so `GET /api/operations/<id>` from
either process shows where it is. When the body ends the runner saves the outcome, writes
the audit entry, counts the operation for /metrics and releases the lock. While it runs, a
heartbeat keeps the lock fresh so no other process takes it over as stale.

Everything stored is redacted: the instance's secrets, and any value the inputs carry under
a secret-looking key, never reach the store, the audit log or the API.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from typing import Any

from actions.alertmanager import AlertmanagerClient
from actions.audit import AuditEntry, redact_inputs, secret_values
from actions.backups import BackupStore
from actions.compose import ComposeRunner
from actions.operations.model import (
    OPERATION_ID_PATTERN,
    Operation,
    OperationConflict,
    OperationError,
    OperationNotFound,
    OperationStatus,
    Step,
    StepFailed,
    StepStatus,
    utc_now,
)
from actions.store import ActionStore
from exporter.access import Principal
from exporter.config import Config
from exporter.discovery import Instance
from exporter.dockerhost import DockerHost
from exporter.engine import DiagnosticsEngine
from exporter.errors import DoctorError
from exporter.redaction import Redactor
from exporter.store import StoreError, apply_retention

log = logging.getLogger(__name__)

# The lock goes stale after 10 minutes without a heartbeat; beat well inside that.
HEARTBEAT_SECONDS = 30.0
# How often wait() looks at the store for an operation run by another process.
_POLL_SECONDS = 0.2
# The store's retention is applied at most this often, as operations end.
_RETENTION_SECONDS = 3600.0


class OperationContext:
    """What an operation body works with; `step` records its progress."""

    def __init__(self, *, op_id: str, kind: str, instance: Instance, principal: Principal,
                 inputs: Mapping[str, Any], engine: DiagnosticsEngine, docker: DockerHost,
                 compose: ComposeRunner, backups: BackupStore,
                 alertmanager: AlertmanagerClient | None, store: ActionStore, config: Config,
                 redactor: Redactor, progress: _Progress) -> None:
        self.op_id = op_id
        self.kind = kind
        self.instance = instance
        self.principal = principal
        # As the caller gave them (secrets included): for the body only, never stored.
        self.inputs = inputs
        self.engine = engine
        self.docker = docker
        self.compose = compose
        self.backups = backups
        self.alertmanager = alertmanager
        self.store = store
        self.config = config
        self.redactor = redactor
        self._progress = progress
        self._open: list[tuple[int, dict[str, Any]]] = []

    def step(self, name: str, **detail: Any) -> AbstractContextManager[dict[str, Any]]:
        """Record a step: started, then ok with its duration, or failed when it raises.

        The yielded dict collects detail (`note` adds to it too); it is saved redacted.
        """
        self._progress.check_lock()
        return self._step(name, detail)

    def undo_step(self, name: str, **detail: Any) -> AbstractContextManager[dict[str, Any]]:
        """As step, for undoing what the operation did: runs even once the lock was lost."""
        return self._step(name, detail)

    @contextmanager
    def _step(self, name: str, detail: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        collected = dict(detail)
        index = self._progress.start_step(name, collected)
        self._open.append((index, collected))
        try:
            yield collected
        except BaseException as exc:
            collected.setdefault("error", describe(exc))
            self._progress.end_step(index, "failed", collected)
            raise
        else:
            self._progress.end_step(index, "ok", collected)
        finally:
            self._open.pop()

    def note(self, **detail: Any) -> None:
        """Add detail to the innermost open step (saved at once)."""
        if not self._open:
            raise RuntimeError("note() outside a step")
        index, collected = self._open[-1]
        collected.update(detail)
        self._progress.update_step(index, collected)

    def skip(self, name: str, **detail: Any) -> None:
        """Record a step that did not apply (e.g. no Alertmanager configured)."""
        self._progress.end_step(self._progress.start_step(name, detail), "skipped", detail)

    def mark(self, name: str, status: StepStatus) -> None:
        """Change the status of the latest step called `name` (e.g. to rolled_back)."""
        self._progress.mark(name, status)

    def refresh(self) -> Instance:
        """Rediscover the instance (new container ids, new secrets) and return it."""
        self.instance = self.engine.instance(self.instance.id, fresh=True)
        self.redact_also(*self.instance.secrets())
        return self.instance

    def redact_also(self, *secrets: str) -> None:
        """Treat these values as secrets from now on (e.g. keys the body generated)."""
        self.redactor = self.redactor.extend(secrets)
        self._progress.redactor = self.redactor


Body = Callable[[OperationContext], Mapping[str, Any]]


class _Progress:
    """The live state of one operation; each change is saved (redacted) to the store."""

    def __init__(self, operation: Operation, store: ActionStore, redactor: Redactor) -> None:
        self.store = store
        self.redactor = redactor
        self.lock_lost = threading.Event()
        self._lock = threading.Lock()
        self._operation = operation
        self._steps: list[Step] = list(operation.steps)
        self._started: dict[int, float] = {}

    @property
    def operation(self) -> Operation:
        """The operation as it stands."""
        with self._lock:
            return replace(self._operation, steps=tuple(self._steps))

    def check_lock(self) -> None:
        """Refuse to begin a step once another process took the lock over."""
        if self.lock_lost.is_set():
            raise OperationError("the instance lock was taken over by another process "
                                 "(this operation's heartbeat stalled); stopped here")

    def set_status(self, status: OperationStatus) -> None:
        """Move the operation to a new status."""
        with self._lock:
            self._operation = replace(self._operation, status=status)
        self.save()

    def start_step(self, name: str, detail: Mapping[str, Any]) -> int:
        """Append a running step; its index."""
        with self._lock:
            self._steps.append(Step(name, "running", utc_now(), None,
                                    self.redactor.data(dict(detail))))
            index = len(self._steps) - 1
            self._started[index] = time.monotonic()
        self.save()
        return index

    def update_step(self, index: int, detail: Mapping[str, Any]) -> None:
        """Replace a step's detail."""
        with self._lock:
            self._steps[index] = replace(self._steps[index],
                                         detail=self.redactor.data(dict(detail)))
        self.save()

    def end_step(self, index: int, status: StepStatus, detail: Mapping[str, Any]) -> None:
        """Close a step with its outcome and duration."""
        with self._lock:
            began = self._started.pop(index, time.monotonic())
            self._steps[index] = replace(self._steps[index], status=status,
                                         duration_seconds=_ms(time.monotonic() - began),
                                         detail=self.redactor.data(dict(detail)))
        self.save()

    def mark(self, name: str, status: StepStatus) -> None:
        """Set the status of the latest step with this name."""
        with self._lock:
            for index in range(len(self._steps) - 1, -1, -1):
                if self._steps[index].name == name:
                    self._steps[index] = replace(self._steps[index], status=status)
                    break
            else:
                return
        self.save()

    def finish(self, status: OperationStatus, result: Mapping[str, Any], error: str | None,
               failed_step: str | None) -> Operation:
        """Close the operation: steps still open are failed, the outcome recorded."""
        now = utc_now()
        with self._lock:
            for index, began in list(self._started.items()):
                self._steps[index] = replace(self._steps[index], status="failed",
                                             duration_seconds=_ms(time.monotonic() - began))
            self._started.clear()
            self._operation = replace(
                self._operation, status=status, steps=tuple(self._steps),
                result=self.redactor.data(dict(result)),
                error=None if error is None else self.redactor.text(error),
                failed_step=failed_step, finished_at=now)
        self.save()
        return self.operation

    def first_failed(self) -> str | None:
        """The first step that failed: where the trouble began (a rollback may follow)."""
        with self._lock:
            return next((s.name for s in self._steps if s.status == "failed"), None)

    def running_step(self) -> str | None:
        """The innermost step still running."""
        with self._lock:
            return next((s.name for s in reversed(self._steps) if s.status == "running"), None)

    def save(self) -> None:
        """Persist; a store hiccup is logged, never allowed to break the operation."""
        try:
            self.store.save_operation(self.operation)
        except StoreError as exc:
            log.warning("operation %s: cannot save progress: %s", self._operation.id, exc)


class OperationRunner:
    """Starts operations, one per instance at a time (across processes), and follows them."""

    def __init__(self, config: Config, engine: DiagnosticsEngine, store: ActionStore,
                 docker: DockerHost, compose: ComposeRunner, backups: BackupStore,
                 alertmanager: AlertmanagerClient | None, *,
                 heartbeat_seconds: float = HEARTBEAT_SECONDS) -> None:
        self.config = config
        self.engine = engine
        self.store = store
        self.docker = docker
        self.compose = compose
        self.backups = backups
        self.alertmanager = alertmanager
        self._heartbeat_seconds = heartbeat_seconds
        self._lock = threading.Lock()
        self._done: dict[str, threading.Event] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._retained_at = float("-inf")
        # Operations left behind by a process that died are closed now, not at the next
        # request for their instance.
        for instance_id in store.reap_stale_locks():
            log.warning("instance %s: released the lock of a dead operation", instance_id)

    def submit(self, kind: str, instance_id: str, principal: Principal,
               inputs: Mapping[str, Any], body: Body) -> Operation:
        """Lock the instance, save the operation and run `body` in a background thread."""
        ctx = self._begin(kind, instance_id, principal, inputs)
        thread = threading.Thread(target=self._run, args=(ctx, body), daemon=False,
                                  name=f"ubd-op-{kind}-{ctx.op_id[:8]}")
        with self._lock:
            self._threads[ctx.op_id] = thread
        # Not a daemon: an operation in flight (stopped containers!) is finished, rollback
        # included, before the process exits.
        thread.start()
        return ctx._progress.operation

    def run_inline(self, kind: str, instance_id: str, principal: Principal,
                   inputs: Mapping[str, Any], body: Body) -> Operation:
        """As submit, but run the body in the caller's thread; the finished operation."""
        ctx = self._begin(kind, instance_id, principal, inputs)
        return self._run(ctx, body)

    def get(self, op_id: str) -> Operation | None:
        """The operation, from the store (so also one run by the other process)."""
        if not isinstance(op_id, str) or not OPERATION_ID_PATTERN.fullmatch(op_id):
            return None
        return self.store.get_operation(op_id)

    def wait(self, op_id: str, timeout: float) -> Operation:
        """The operation once finished, or as it stands after `timeout` seconds."""
        with self._lock:
            event = self._done.get(op_id)
        if event is not None:
            event.wait(max(0.0, timeout))
        else:
            deadline = time.monotonic() + max(0.0, timeout)
            while True:
                found = self.get(op_id)
                if found is None:
                    raise OperationNotFound()
                if found.finished or time.monotonic() >= deadline:
                    return found
                time.sleep(min(_POLL_SECONDS, max(0.0, deadline - time.monotonic())))
        found = self.get(op_id)
        if found is None:
            raise OperationNotFound()
        return found

    def join(self, timeout: float | None = None) -> bool:
        """Wait for this runner's background operations; False if some still run."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads.values())
        for thread in threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in threads)

    # internals ------------------------------------------------------------------------

    def _begin(self, kind: str, instance_id: str, principal: Principal,
               inputs: Mapping[str, Any]) -> OperationContext:
        instance = self.engine.instance(instance_id, fresh=True)
        redactor = Redactor([*instance.secrets(), *secret_values(inputs)])
        shown_inputs = redact_inputs(dict(inputs), redactor)
        op_id = uuid.uuid4().hex
        holder = self.store.acquire_lock(instance.id, op_id)
        if holder is not None:
            self._audit(AuditEntry(at=utc_now(), who=principal.name, role=principal.role,
                                   action=kind, instance_id=instance.id, inputs=shown_inputs,
                                   result="conflict", error=f"operation {holder} is running",
                                   operation_id=holder))
            raise OperationConflict(instance.id, holder)
        operation = Operation(id=op_id, kind=kind, instance_id=instance.id, status="pending",
                              principal=principal.name, role=principal.role,
                              inputs=shown_inputs, steps=(), result={}, error=None,
                              failed_step=None, created_at=utc_now())
        progress = _Progress(operation, self.store, redactor)
        try:
            self.store.save_operation(operation)
        except BaseException:
            self.store.release_lock(instance.id, op_id)
            raise
        with self._lock:
            self._done[op_id] = threading.Event()
        return OperationContext(
            op_id=op_id, kind=kind, instance=instance, principal=principal, inputs=inputs,
            engine=self.engine, docker=self.docker, compose=self.compose,
            backups=self.backups, alertmanager=self.alertmanager, store=self.store,
            config=self.config, redactor=redactor, progress=progress)

    def _run(self, ctx: OperationContext, body: Body) -> Operation:
        progress = ctx._progress
        stop_beating = threading.Event()
        beat = threading.Thread(target=self._heartbeat, daemon=True,
                                args=(ctx.instance.id, ctx.op_id, progress, stop_beating),
                                name=f"ubd-beat-{ctx.op_id[:8]}")
        beat.start()
        status: OperationStatus = "failed"
        result: Mapping[str, Any] = {}
        error: str | None = None
        failed_step: str | None = None
        try:
            progress.set_status("running")
            result = body(ctx) or {}
            status = "succeeded"
        except OperationError as exc:
            status = "rolled_back" if exc.rolled_back else "failed"
            error = str(exc)
            failed_step = progress.first_failed() or (
                exc.step if isinstance(exc, StepFailed) else progress.running_step())
        except DoctorError as exc:
            error = str(exc)
            failed_step = progress.first_failed() or progress.running_step()
        except Exception as exc:  # a bug must still end the operation and free the lock
            log.exception("operation %s (%s on %s) failed unexpectedly", ctx.op_id, ctx.kind,
                          ctx.instance.id)
            error = f"internal error: {describe(exc)}"
            failed_step = progress.first_failed() or progress.running_step()
        finally:
            stop_beating.set()
            operation = progress.finish(status, result, error, failed_step)
            self._close(operation)
        return operation

    def _close(self, operation: Operation) -> None:
        """Audit, count and unlock; each independently, so one failure skips no other."""
        try:
            self._audit(AuditEntry.for_operation(operation))
            try:
                self.store.record_operation(operation.kind, operation.status)
            except StoreError as exc:
                log.error("operation %s: cannot count it: %s", operation.id, exc)
        finally:
            try:
                self.store.release_lock(operation.instance_id, operation.id)
            except StoreError as exc:
                # The heartbeat stops now, so the lock goes stale and is taken over later.
                log.error("operation %s: cannot release the lock of %s: %s", operation.id,
                          operation.instance_id, exc)
            with self._lock:
                event = self._done.pop(operation.id, None)
                self._threads.pop(operation.id, None)
            if event is not None:
                event.set()
            log.info("operation %s (%s on %s) %s in %.1fs", operation.id, operation.kind,
                     operation.instance_id, operation.status, operation.duration_seconds or 0)
            self._retention()

    def _retention(self) -> None:
        """Apply the store's retention, at most once an hour (the action API alone has no
        sweep to do it)."""
        with self._lock:
            due = time.monotonic() - self._retained_at >= _RETENTION_SECONDS
            if due:
                self._retained_at = time.monotonic()
        if due:
            apply_retention(self.store, self.config.store)

    def _audit(self, entry: AuditEntry) -> None:
        try:
            self.store.append_audit(entry)
        except StoreError as exc:
            log.error("cannot write the audit entry of %s on %s: %s", entry.action,
                      entry.instance_id, exc)

    def _heartbeat(self, instance_id: str, op_id: str, progress: _Progress,
                   stop: threading.Event) -> None:
        while not stop.wait(self._heartbeat_seconds):
            try:
                held = self.store.heartbeat(instance_id, op_id)
            except StoreError as exc:
                log.warning("operation %s: heartbeat failed: %s", op_id, exc)
                continue
            if not held:
                log.error("operation %s: lost the lock of %s to another process", op_id,
                          instance_id)
                progress.lock_lost.set()
                return


def _ms(seconds: float) -> float:
    # Durations are kept to the millisecond, as stored and served.
    return round(seconds, 3)


def describe(exc: BaseException) -> str:
    """An exception as one line: its own message for the tool's errors, else type and text."""
    if isinstance(exc, DoctorError):
        return str(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:500] if text else type(exc).__name__
