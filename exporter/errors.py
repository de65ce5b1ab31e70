"""The one exception hierarchy of Ultrabase Doctor."""

from __future__ import annotations


class DoctorError(Exception):
    """Base of every error the tool raises on purpose; its message is safe to show."""


class ConfigError(DoctorError):
    """The configuration file is missing, unreadable or invalid."""

    def __init__(self, message: str, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems

    def __str__(self) -> str:
        head = self.args[0]
        if not self.problems:
            return str(head)
        return "\n".join([head, *(f"  {p}" for p in self.problems)])


class RegistryError(DoctorError):
    """The Ultrabase registry cannot be read or parsed as a whole."""


class DockerUnavailableError(DoctorError):
    """The Docker engine cannot be reached or answered with an error."""


class InstanceNotFoundError(DoctorError):
    """No discovered instance has the requested id (or the id is invalid)."""
