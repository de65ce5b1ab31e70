"""Signing in to the console: sessions, CSRF tokens, security headers and access checks.

- The credential an operator signs in with (an API token or a manager JWT) stays in this
  process's memory, keyed by a random session id. The browser's cookie is Flask's signed
  session holding only that id, the form token and the language: HttpOnly, SameSite=Strict,
  Secure over https. A restart of the process signs everyone out.
- Every request re-checks the credential with the same AccessControl as the JSON APIs, so
  a token removed from the config or a manager user demoted in users.json loses access at
  the next click, and a JWT at its expiry.
- Every form that changes something carries the session's form token (synchronizer token
  pattern); a POST without it, or with another, is refused before anything runs.
- Pages are served with a strict Content-Security-Policy: scripts, styles and images from
  this origin only, nothing inline, no framing.
"""

from __future__ import annotations

import functools
import hmac
import logging
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

from flask import Flask, Request, Response, current_app, g, request, session
from flask.sessions import SecureCookieSessionInterface

from exporter.access import AccessControl, AccessError, Principal, Role, Unauthorized
from exporter.config import Config
from exporter.errors import ConfigError, DoctorError
from exporter.web.access import INSTANCES_EXTENSION, current_access

log = logging.getLogger(__name__)

KEEPER_EXTENSION = "ultrabase_doctor.console.sessions"
COOKIE_NAME = "ubd_console"
KEY_FILE = "console_secret"  # the session-signing key, beside the store
CSRF_FIELD = "csrf_token"
MAX_SESSIONS = 1000
_CREDENTIAL_MAX = 8192

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

F = TypeVar("F", bound=Callable[..., Any])


class CsrfRefused(DoctorError):
    """A form post without this session's form token."""

    status = 400
    code = "csrf_refused"

    def __init__(self) -> None:
        super().__init__("the form did not come from this console session (missing or old "
                         "form token); reload the page and try again")


class SignInNeeded(DoctorError):
    """No session, or its credential is no longer accepted."""

    status = 401
    code = "unauthorized"

    def __init__(self) -> None:
        super().__init__(Unauthorized.MESSAGE)


@dataclass
class _Held:
    credential: str
    expires: float


class SessionKeeper:
    """Signed-in sessions in memory: session id -> credential, until they expire."""

    def __init__(self, lifetime_seconds: float, *, max_sessions: int = MAX_SESSIONS,
                 clock: Callable[[], float] = time.time) -> None:
        self._lifetime = lifetime_seconds
        self._max = max_sessions
        self._clock = clock
        self._held: OrderedDict[str, _Held] = OrderedDict()
        self._lock = threading.Lock()

    def open(self, credential: str) -> str:
        """A new session id for this credential (the oldest session goes beyond the cap)."""
        sid = secrets.token_urlsafe(32)
        with self._lock:
            self._held[sid] = _Held(credential, self._clock() + self._lifetime)
            while len(self._held) > self._max:
                self._held.popitem(last=False)
        return sid

    def credential(self, sid: object) -> str | None:
        """The credential of a live session, else None (an expired one is dropped)."""
        if not isinstance(sid, str):
            return None
        with self._lock:
            held = self._held.get(sid)
            if held is None:
                return None
            if held.expires <= self._clock():
                del self._held[sid]
                return None
            return held.credential

    def close(self, sid: object) -> None:
        """Forget a session (sign-out)."""
        if isinstance(sid, str):
            with self._lock:
                self._held.pop(sid, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._held)


class _SessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie session, Secure when the request came over https."""

    def __init__(self, secure: bool | None) -> None:
        self._secure = secure

    def get_cookie_secure(self, app: Flask) -> bool:
        """Secure as configured, else when this request is https."""
        if self._secure is not None:
            return self._secure
        return bool(request) and request.is_secure


def secret_key(config: Config) -> str:
    """The configured key, else the installation's own (made once, 0600, beside the store)."""
    if config.console.secret_key is not None:
        return config.console.secret_key.get_secret_value()
    path = config.store.path.parent / KEY_FILE
    try:
        return _read_or_make_key(path)
    except OSError as exc:
        raise ConfigError(f"console: cannot keep the session key in {path}: "
                          f"{exc.strerror or exc}; set console.secret_key") from None


def _read_or_make_key(path: Path) -> str:
    try:
        # O_EXCL: of two processes starting together, one writes and both read its key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(48))
            out.flush()
            os.fsync(out.fileno())
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigError(f"console: {path} must be readable by its owner only (mode "
                          f"{mode:o}); chmod 600 it")
    key = path.read_text(encoding="ascii").strip()
    if len(key) < 32:
        raise ConfigError(f"console: {path} holds no usable key; delete it to make a new one")
    return key


def init_sessions(app: Flask, config: Config) -> SessionKeeper:
    """Cookie settings, the signing key and the session keeper of the app."""
    app.secret_key = secret_key(config)
    app.session_interface = _SessionInterface(config.console.secure_cookie)
    lifetime = timedelta(hours=config.console.session_hours)
    app.config.update(SESSION_COOKIE_NAME=COOKIE_NAME, SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SAMESITE="Strict", SESSION_COOKIE_PATH="/",
                      PERMANENT_SESSION_LIFETIME=lifetime)
    keeper = SessionKeeper(lifetime.total_seconds())
    app.extensions[KEEPER_EXTENSION] = keeper
    return keeper


def keeper() -> SessionKeeper:
    """The current app's session keeper."""
    found: SessionKeeper = current_app.extensions[KEEPER_EXTENSION]
    return found


# form tokens --------------------------------------------------------------------------------


def csrf_token() -> str:
    """This session's form token (made on first use)."""
    token = session.get(CSRF_FIELD)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session[CSRF_FIELD] = token
    return token


def check_csrf(req: Request) -> None:
    """Refuse a form post whose token is not this session's."""
    sent = req.form.get(CSRF_FIELD, "")
    held = session.get(CSRF_FIELD)
    if not isinstance(held, str) or not sent or not hmac.compare_digest(sent.encode(),
                                                                        held.encode()):
        raise CsrfRefused()


# signing in ---------------------------------------------------------------------------------


def sign_in(access: AccessControl, credential: str) -> Principal:
    """Open a session for a credential the APIs accept; Unauthorized otherwise."""
    credential = credential.strip()
    if not credential or len(credential) > _CREDENTIAL_MAX:
        raise Unauthorized()
    principal = access.authenticate(f"Bearer {credential}")
    sessions = keeper()
    sessions.close(session.get("sid"))
    # A new id and a new form token at sign-in: nothing set before it carries over.
    session.clear()
    session.permanent = True
    session["sid"] = sessions.open(credential)
    csrf_token()
    return principal


def sign_out() -> None:
    """Close the session and clear the cookie."""
    keeper().close(session.get("sid"))
    session.clear()


def session_principal() -> Principal | None:
    """Who is signed in, re-checked against the access control now; None if nobody."""
    sessions = keeper()
    credential = sessions.credential(session.get("sid"))
    if credential is None:
        return None
    try:
        return current_access().authenticate(f"Bearer {credential}")
    except AccessError:
        sessions.close(session.get("sid"))
        return None


def signed_in(role: Role, *, instance_arg: str | None = "instance_id") -> Callable[[F], F]:
    """Like exporter.web.access.require, for the console: the session's credential, the
    same AccessControl, the same 401/403/404; `g.principal` set for the view."""

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            principal = session_principal()
            if principal is None:
                raise SignInNeeded()
            if request.method == "POST":
                check_csrf(request)
            instance_id = str(kwargs[instance_arg]) if instance_arg is not None else None
            known = current_app.extensions.get(INSTANCES_EXTENSION)
            current_access().authorize(principal, role, instance_id,
                                       known=cast(Callable[[str], bool], known))
            g.principal = principal
            return view(*args, **kwargs)

        return cast(F, wrapper)

    return decorate


def add_security_headers(response: Response) -> Response:
    """The console's headers on every one of its answers."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response
