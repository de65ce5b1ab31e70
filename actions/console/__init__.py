"""The operator console: server-rendered pages at / of the action API.

A blueprint over the same services as the JSON routes (see views), signed in with the same
tokens and manager JWTs (see session), in English or Portuguese (see i18n). Its own small
script (static/console.js) only follows progress; every page reads without it.
"""

from __future__ import annotations

from flask import Flask

from actions.console.session import init_sessions
from actions.console.views import bp
from exporter.config import Config


def init_console(app: Flask, config: Config) -> None:
    """Serve the console from this app (sessions, then the pages)."""
    init_sessions(app, config)
    app.register_blueprint(bp)
