"""Builds the real node's images with podman, with no registry: base, pause, the project's.

Flow: `mmdebstrap` makes a Debian root file system (Python, venv, the host's CA bundle so
that pip works behind the machine's TLS-intercepting proxy) that is imported as the base
image; a static Go binary becomes the pause image; then Dockerfile.engine,
Dockerfile.operator and examples/post_analytics/Dockerfile are built FROM that base
(`--build-arg BASE_IMAGE`). Each image is saved as a tar in `<cache>/images/`, which
`dev/cluster up` imports into the node's containerd.

What must stay true: an image is rebuilt only when the digest of its inputs (files,
build arguments, the digest of its parent) changes, and a tar on disk is complete (it is
written under a temporary name and renamed). Podman keeps its storage under the same
cache folder and runs with runc and ulimits the sandbox allows (dev/README.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from dev.plane.build import go_env
from dev.plane.layout import REPO, cache_root

REGISTRY = "docker.io"
"""Kubernetes names `rewind/engine:0.1.0` as docker.io/rewind/engine:0.1.0; so do we."""
BASE_TAG = f"{REGISTRY}/rewind-dev/base:bookworm"
PAUSE_TAG = f"{REGISTRY}/rewind-dev/pause:1"
DEBIAN_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
SKIP = {"__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"}

CONTAINERS_CONF = """\
# Written by dev/node/images.py: what podman needs in this sandbox (dev/README.md).
[containers]
# Raising rlimits is not permitted: stay at or below the host's hard limits.
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
# crun refuses the hybrid cgroup layout ("cgroups in hybrid mode not supported").
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""
REGISTRIES_CONF = """\
# Written by dev/node/images.py: short names such as rewind/engine:0.1.0 mean docker.io.
unqualified-search-registries = ["docker.io"]
short-name-mode = "permissive"
"""


@dataclass(frozen=True)
class Image:
    """One image built by `podman build`; `inputs` are the paths whose content it uses."""

    tags: tuple[str, ...]
    dockerfile: Path
    context: Path
    inputs: tuple[Path, ...]
    args: dict[str, str] = field(default_factory=dict)
    parent: str = BASE_TAG


def _base_args() -> dict[str, str]:
    return {"BASE_IMAGE": BASE_TAG}


def project_images() -> list[Image]:
    """The project's images, parents first, tagged as the chart and the examples name them."""
    src = (REPO / "pyproject.toml", REPO / "README.md", REPO / "engine", REPO / "operator")
    app = REPO / "examples" / "post_analytics"
    out = [
        Image(
            tags=(f"{REGISTRY}/rewind/engine:0.1.0", f"{REGISTRY}/rewind/engine:dev"),
            dockerfile=REPO / "Dockerfile.engine",
            context=REPO,
            inputs=(REPO / "Dockerfile.engine", *src),
            args=_base_args(),
        ),
        Image(
            tags=(f"{REGISTRY}/rewind/operator:0.1.0", f"{REGISTRY}/rewind/operator:dev"),
            dockerfile=REPO / "Dockerfile.operator",
            context=REPO,
            inputs=(REPO / "Dockerfile.operator", *src),
            args=_base_args(),
        ),
    ]
    for version in ("v1", "v2", "v2b", "v3-crash", "v4-renamed-uid"):
        out.append(
            Image(
                tags=(f"{REGISTRY}/rewind-examples/post-analytics:{version}",),
                dockerfile=app / "Dockerfile",
                context=app,
                inputs=(app / "Dockerfile", app / "post_events.py", app / version),
                args={"VERSION": version},
                parent=f"{REGISTRY}/rewind/engine:0.1.0",
            )
        )
    return out


def images_dir() -> Path:
    return cache_root() / "images"


def _files(paths: Iterable[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out += sorted(
                f
                for f in p.rglob("*")
                if f.is_file() and not SKIP & set(f.relative_to(p).parts) and f.suffix != ".pyc"
            )
        else:
            out.append(p)
    return out


def digest_of(paths: Iterable[Path], extra: Iterable[str] = ()) -> str:
    """A digest of file names and contents plus `extra` strings (arguments, parents)."""
    h = hashlib.sha256()
    for f in _files(paths):
        h.update(str(f.relative_to(REPO) if f.is_relative_to(REPO) else f).encode() + b"\0")
        h.update(f.read_bytes() + b"\0")
    for e in extra:
        h.update(e.encode() + b"\0")
    return h.hexdigest()[:16]


class Podman:
    """podman with its storage and configuration under the image cache."""

    def __init__(self, root: Path, log: Path) -> None:
        self.root = root
        self.log = log
        root.mkdir(parents=True, exist_ok=True)
        (root / "containers.conf").write_text(CONTAINERS_CONF)
        (root / "registries.conf").write_text(REGISTRIES_CONF)

    def env(self) -> dict[str, str]:
        return os.environ | {
            "CONTAINERS_CONF": str(self.root / "containers.conf"),
            "CONTAINERS_REGISTRIES_CONF": str(self.root / "registries.conf"),
        }

    def run(self, *args: str, stdin: Path | None = None) -> None:
        cmd = [
            "podman", "--root", str(self.root / "storage"),
            "--runroot", str(self.root / "run"), *args,
        ]  # fmt: skip
        with self.log.open("a") as f:
            f.write(f"$ {' '.join(cmd)}\n")
            f.flush()
            src = stdin.open("rb") if stdin else subprocess.DEVNULL
            try:
                r = subprocess.run(cmd, env=self.env(), stdin=src, stdout=f, stderr=f, check=False)
            finally:
                if stdin:
                    src.close()  # type: ignore[union-attr]
        if r.returncode != 0:
            tail = "".join(self.log.read_text().splitlines(keepends=True)[-20:])
            raise RuntimeError(f"podman {args[0]} failed; end of {self.log}:\n{tail}")


@dataclass
class Store:
    """`<cache>/images/`: `built.json` (tag -> digest of its inputs) and `node.tar`, every
    image the node runs in one archive (they share their layers), with `node.tar.digest`
    naming the `built.json` it was saved from."""

    root: Path

    @property
    def index(self) -> Path:
        return self.root / "built.json"

    @property
    def archive(self) -> Path:
        return self.root / "node.tar"

    def built(self) -> dict[str, str]:
        return json.loads(self.index.read_text()) if self.index.exists() else {}

    def record(self, tag: str, digest: str) -> None:
        b = self.built()
        b[tag] = digest
        tmp = self.index.with_suffix(".tmp")
        tmp.write_text(json.dumps(b, indent=1, sort_keys=True))
        tmp.rename(self.index)

    def built_digest(self) -> str:
        return hashlib.sha256(json.dumps(self.built(), sort_keys=True).encode()).hexdigest()

    def archive_current(self) -> bool:
        stamp = self.archive.with_suffix(".tar.digest")
        return self.archive.exists() and stamp.exists() and stamp.read_text() == self.built_digest()

    def tars(self) -> list[Path]:
        return [self.archive]


def _say(msg: str) -> None:
    print(f"dev/cluster: {msg}", file=sys.stderr, flush=True)


def _save(podman: Podman, store: Store, tags: list[str]) -> None:
    tmp = store.archive.with_suffix(".partial")
    tmp.unlink(missing_ok=True)
    # docker-archive keeps every tag (`-m`); containerd's `ctr images import` reads it.
    podman.run("save", "-m", "--format", "docker-archive", "-o", str(tmp), *tags)
    tmp.rename(store.archive)
    store.archive.with_suffix(".tar.digest").write_text(store.built_digest())


def _build_base(podman: Podman, store: Store, log: Path) -> str:
    digest = digest_of([HOST_CA_BUNDLE], [DEBIAN_SUITE, *BASE_PACKAGES])
    if store.built().get(BASE_TAG) == digest:
        return digest
    _say(f"building the base image {BASE_TAG} with mmdebstrap (log: {log})")
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        cmd = [
            "mmdebstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
            # The host's CA bundle, so that pip in RUN steps trusts the machine's proxy.
            f"--customize-hook=cp {HOST_CA_BUNDLE} \"$1\"/etc/ssl/certs/ca-certificates.crt",
            "--customize-hook=rm -rf \"$1\"/var/lib/apt/lists/* \"$1\"/var/cache/apt/*",
            DEBIAN_SUITE, str(rootfs),
        ]  # fmt: skip
        with log.open("a") as f:
            f.write(f"$ {' '.join(cmd)}\n")
            f.flush()
            if subprocess.run(cmd, stdout=f, stderr=f, check=False).returncode != 0:
                raise RuntimeError(f"mmdebstrap failed; see {log}")
        podman.run("import", "--change", 'CMD ["python3"]', str(rootfs), BASE_TAG)
    store.record(BASE_TAG, digest)
    _say(f"built {BASE_TAG} in {time.monotonic() - t0:.0f} s")
    return digest


def _build_pause(podman: Podman, store: Store, log: Path) -> None:
    src = REPO / "dev" / "node" / "pause"
    digest = digest_of([src])
    if store.built().get(PAUSE_TAG) == digest:
        return
    _say(f"building the pause image {PAUSE_TAG}")
    with tempfile.TemporaryDirectory() as tmp:
        ctx = Path(tmp)
        with log.open("a") as f:
            r = subprocess.run(
                ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(ctx / "pause"), "."],
                cwd=src, env=go_env(), stdout=f, stderr=f, check=False,
            )  # fmt: skip
        if r.returncode != 0:
            raise RuntimeError(f"building the pause binary failed; see {log}")
        (ctx / "Dockerfile").write_text('FROM scratch\nCOPY pause /pause\nENTRYPOINT ["/pause"]\n')
        podman.run("build", "--network=host", "-t", PAUSE_TAG, str(ctx))
    store.record(PAUSE_TAG, digest)


def build_images(log_dir: Path) -> Store:
    """Builds every image whose inputs changed; returns the store holding their tars."""
    store = Store(images_dir())
    store.root.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / "build-images.log"
    podman = Podman(store.root / "podman", log)
    digests = {BASE_TAG: _build_base(podman, store, log)}
    _build_pause(podman, store, log)
    for img in project_images():
        args = [f"{k}={v}" for k, v in sorted(img.args.items())]
        digest = digest_of(img.inputs, [*args, digests.get(img.parent, "")])
        digests[img.tags[0]] = digest
        if store.built().get(img.tags[0]) == digest:
            continue
        _say(f"building image {img.tags[0]} (log: {log})")
        t0 = time.monotonic()
        tag_args = [a for t in img.tags for a in ("-t", t)]
        build_args = [a for kv in args for a in ("--build-arg", kv)]
        podman.run(
            "build", "--network=host", "-f", str(img.dockerfile), *tag_args, *build_args,
            str(img.context),
        )  # fmt: skip
        store.record(img.tags[0], digest)
        _say(f"built {img.tags[0]} in {time.monotonic() - t0:.0f} s")
    if not store.archive_current():
        t0 = time.monotonic()
        _save(podman, store, [PAUSE_TAG, *(t for img in project_images() for t in img.tags)])
        _say(f"saved the node's images in {time.monotonic() - t0:.0f} s ({store.archive})")
    return store


def cache_size() -> int:
    """Bytes under the image cache (tars and podman's storage)."""
    root = images_dir()
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file() and not f.is_symlink())


if __name__ == "__main__":
    build_images(REPO / "dev" / ".state" / "logs")
    print(f"{cache_size() / 2**20:.0f} MiB in {images_dir()}", file=sys.stderr)
