"""The image map: an image reference becomes a local code folder and a command line.

``dev/images.yaml`` maps image references to ``{dir, entrypoint, cmd, env}``. ``dir`` is
relative to the repository root and becomes the container's working folder; ``entrypoint``
and ``cmd`` play Docker's ENTRYPOINT and CMD against the pod's ``command`` and ``args``
(``command`` replaces ENTRYPOINT and drops CMD, ``args`` replaces CMD); ``env`` is the
image's ENV, which the pod's own env overrides.

What must stay true: an unknown image is an error whose message names ``dev/images.yaml``
(the pod shows it as ErrImagePull), and the map is re-read when the file changes, so that
adding an image needs no kubelet restart.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

IMAGE_MAP_NAME = "dev/images.yaml"


class ImageNotFoundError(Exception):
    """The image reference is not in the image map (or its folder is missing)."""


class ImageMapError(Exception):
    """The image map file itself is malformed."""


@dataclass(frozen=True)
class Image:
    """One resolved image: where its code lives and how Docker would start it."""

    ref: str
    dir: Path
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def image_id(self) -> str:
        """What containerStatuses[].imageID shows: the folder the image stands for."""
        return f"rewind-dev://{self.dir}"


def normalize_ref(ref: str) -> str:
    """Spell a reference the way the map does: no ``docker.io/`` prefix, a tag always.

    Why: ``nginx``, ``docker.io/library/nginx:latest`` and ``nginx:latest`` are one image
    for a container runtime, so they must be one key here too.
    """
    ref = ref.strip()
    for prefix in ("docker.io/library/", "index.docker.io/library/", "docker.io/"):
        if ref.startswith(prefix):
            ref = ref[len(prefix) :]
            break
    name = ref.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if "@" not in ref and ":" not in last:
        ref += ":latest"
    return ref


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, list):
        raise ImageMapError(f"{what} must be a list of strings, got {value!r}")
    return tuple(str(v) for v in value)


def parse_image_map(data: Any, repo_root: Path) -> dict[str, Image]:
    """Validate the YAML document of the image map and resolve folders against the repo."""
    if data is None:
        return {}
    images = data.get("images", data) if isinstance(data, dict) else None
    if not isinstance(images, dict):
        raise ImageMapError(f"{IMAGE_MAP_NAME} must map image references to entries")
    result: dict[str, Image] = {}
    for ref, entry in images.items():
        if not isinstance(entry, dict) or "dir" not in entry:
            raise ImageMapError(f"{IMAGE_MAP_NAME}: entry {ref!r} needs at least 'dir'")
        env = entry.get("env") or {}
        if not isinstance(env, dict):
            raise ImageMapError(f"{IMAGE_MAP_NAME}: env of {ref!r} must be a mapping")
        key = normalize_ref(str(ref))
        result[key] = Image(
            ref=key,
            dir=(repo_root / str(entry["dir"])).resolve(),
            entrypoint=_strings(entry.get("entrypoint"), f"{ref}.entrypoint"),
            cmd=_strings(entry.get("cmd"), f"{ref}.cmd"),
            env={str(k): str(v) for k, v in env.items()},
        )
    return result


def container_argv(
    image: Image, command: Sequence[str] | None, args: Sequence[str] | None
) -> list[str]:
    """Docker's rule: ``command`` replaces ENTRYPOINT (and drops CMD), ``args`` replaces CMD."""
    if command:
        return [*command, *(args or [])]
    return [*image.entrypoint, *(args if args else image.cmd)]


class ImageMap:
    """The image map file, re-read whenever its modification time changes. Thread-safe."""

    def __init__(self, path: Path, repo_root: Path) -> None:
        self._path = path
        self._repo_root = repo_root
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._images: dict[str, Image] = {}

    @property
    def path(self) -> Path:
        return self._path

    def _reload(self) -> None:
        try:
            stat = self._path.stat()
        except FileNotFoundError as exc:
            raise ImageNotFoundError(f"the image map {self._path} does not exist") from exc
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            data = yaml.safe_load(self._path.read_text())
            self._images = parse_image_map(data, self._repo_root)
            self._stamp = stamp

    def resolve(self, ref: str) -> Image:
        """The image for ``ref``; ImageNotFoundError names the image map when it is unknown."""
        with self._lock:
            self._reload()
            image = self._images.get(normalize_ref(ref))
        if image is None:
            raise ImageNotFoundError(
                f'image "{ref}" is not in {IMAGE_MAP_NAME} (the process kubelet maps image '
                f"references to local folders there; add an entry with dir/entrypoint/cmd)"
            )
        if not image.dir.is_dir():
            raise ImageNotFoundError(
                f'image "{ref}" maps to {image.dir} in {IMAGE_MAP_NAME}, which is not a folder'
            )
        return image
