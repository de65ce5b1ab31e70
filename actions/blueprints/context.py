"""Where a route finds the action services and the app's shared state (Flask extensions)."""

from __future__ import annotations

from flask import current_app

from actions.context import ActionServices

EXTENSION = "ultrabase_doctor.actions"
RATE_LIMITS_EXTENSION = "ultrabase_doctor.actions.rate_limits"
WAIT_SLOTS_EXTENSION = "ultrabase_doctor.actions.wait_slots"


def services() -> ActionServices:
    """The current app's services."""
    found: ActionServices = current_app.extensions[EXTENSION]
    return found
