"""The fleet's private state under DIR/.fleet: instances as created, images, active faults."""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleet.model import Credentials, FleetError, Instance, Ports
from fleet.render import write_text

STATE_DIR = ".fleet"
STATE_FILE = "state.json"


def state_dir(root: Path) -> Path:
    """DIR/.fleet."""
    return root / STATE_DIR


def is_fleet_root(root: Path) -> bool:
    """True when `root` holds a fleet's state file."""
    return (state_dir(root) / STATE_FILE).is_file()


@dataclass(frozen=True)
class FleetState:
    """A snapshot of state.json."""

    root: Path
    images: dict[str, str]  # component -> image tag
    instances: tuple[Instance, ...]
    # instance id -> fault name -> what heal needs (stash paths, holder pid, ...)
    faults: dict[str, dict[str, dict[str, Any]]]

    def instance(self, instance_id: str) -> Instance:
        """The instance with this id; FleetError for an unknown id."""
        for item in self.instances:
            if item.id == instance_id:
                return item
        raise FleetError(f"no instance {instance_id!r} in the fleet at {self.root}")

    def holder_pids(self) -> list[int]:
        """Pids of the port-holder processes of active port-taken faults."""
        return [int(data["pid"]) for faults in self.faults.values()
                for data in faults.values() if "pid" in data]


def _instance_to_json(instance: Instance) -> dict[str, Any]:
    return {"id": instance.id, "name": instance.name, "created_at": instance.created_at,
            "ports": instance.ports.as_dict(),
            "credentials": instance.credentials.manager_registry_dict(),
            "owner": instance.owner, "organization": instance.organization,
            "manager_exact": instance.manager_exact}


def _instance_from_json(data: dict[str, Any], core_dir: Path) -> Instance:
    return Instance(id=data["id"], name=data["name"], created_at=data["created_at"],
                    ports=Ports(**data["ports"]), credentials=Credentials(**data["credentials"]),
                    core_dir=core_dir, owner=data.get("owner", "admin"),
                    organization=data.get("organization", "Fleet Organization"),
                    manager_exact=bool(data.get("manager_exact", False)))


def save(state: FleetState) -> None:
    """Write state.json atomically (mode 0600, in a 0700 dir)."""
    directory = state_dir(state.root)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = {"version": 2, "images": state.images,
            "instances": [_instance_to_json(i) for i in state.instances],
            "faults": state.faults}
    write_text(directory / STATE_FILE, json.dumps(data, indent=2) + "\n", mode=0o600)


def load(root: Path) -> FleetState:
    """Read state.json; FleetError when `root` holds no fleet."""
    path = state_dir(root) / STATE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FleetError(f"no fleet at {root} ({path} is missing)") from None
    except (OSError, ValueError) as exc:
        raise FleetError(f"cannot read {path}: {exc}") from None
    core_dir = root / "supabase-core"
    # Version 1 had one image for every component.
    tags = data.get("images") or {"*": data["image"]}
    return FleetState(root=root, images=dict(tags),
                      instances=tuple(_instance_from_json(i, core_dir)
                                      for i in data["instances"]),
                      faults={k: dict(v) for k, v in data.get("faults", {}).items()})


@contextlib.contextmanager
def locked(root: Path, name: str = "state") -> Iterator[None]:
    """Hold one of the fleet's locks, across processes: "state" for state.json and the
    registry, "instance-<id>" for one instance's faults."""
    directory = state_dir(root)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    with (directory / f"{name}.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
