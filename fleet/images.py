"""The fleet's base image: an empty merged-usr rootfs imported with `docker import`.

Containers run host binaries (PostgreSQL, Python, wget, curl, node) from read-only bind
mounts of /usr, /etc and the Python install, so nothing is pulled. /sbin is a real
directory because Docker mounts its init binary at /sbin/docker-init (`init: true`).
"""

from __future__ import annotations

import hashlib
import io
import tarfile

import docker
from docker.errors import APIError, ImageNotFound

FLEET_LABEL = "ultrabase-fleet"
REPOSITORY = "ultrabase-fleet/base"
_DIRS = {"tmp": 0o1777, "run": 0o755, "var": 0o755, "home": 0o755, "root": 0o700,
         "proc": 0o555, "sys": 0o555, "dev": 0o755, "etc": 0o755, "usr": 0o755,
         "sbin": 0o755}
_LINKS = {"bin": "usr/bin", "lib": "usr/lib", "lib64": "usr/lib64", "var/run": "../run"}
CHANGES = (
    f"LABEL {FLEET_LABEL}=1",
    "ENV PATH=/fleet/standins:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
)


def rootfs_tar() -> bytes:
    """The rootfs tarball: directories and merged-usr symlinks, nothing else."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, mode in sorted(_DIRS.items()):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, 0
            tar.addfile(info)
        for name, target in sorted(_LINKS.items()):
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.mtime = tarfile.SYMTYPE, target, 0
            tar.addfile(info)
    return buffer.getvalue()


def image_tag() -> str:
    """repository:tag, the tag being a hash of the rootfs and the image config."""
    digest = hashlib.sha256(rootfs_tar() + "\n".join(CHANGES).encode()).hexdigest()
    return f"{REPOSITORY}:{digest[:12]}"


def ensure_base_image(client: docker.DockerClient) -> str:
    """Build the base image unless an image with its content hash exists; its tag."""
    tag = image_tag()
    try:
        client.images.get(tag)
        return tag
    except ImageNotFound:
        pass
    repository, _, version = tag.partition(":")
    client.api.import_image_from_data(rootfs_tar(), repository=repository, tag=version,
                                      changes=list(CHANGES))
    client.images.get(tag)
    return tag


def remove_base_image(client: docker.DockerClient, tag: str) -> bool:
    """Remove the image unless containers still use it; True when it is gone.

    Removal is by id: removing by tag while a container still refers to the image would
    only untag it and leave it dangling.
    """
    try:
        image = client.images.get(tag)
    except ImageNotFound:
        return True
    if client.containers.list(all=True, filters={"ancestor": image.id}):
        return False
    try:
        client.images.remove(image.id)
    except ImageNotFound:
        return True
    except APIError as exc:
        if exc.status_code == 409:
            return False
        raise
    return True
