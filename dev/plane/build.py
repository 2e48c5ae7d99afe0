"""Turns pins into cached binaries: `go build` for the Go modules, `mvn` for Kafka.

A component is built into `<cache>/<name>-<version>.partial/` and renamed into place
only when the build succeeded, so an interrupted build never leaves a folder that looks
complete. Go builds use the exact flags of the project's first build, so that Go's
build cache is shared between them, and `GOSUMDB=off` with `-mod=readonly`: every
module is checked against the committed go.sum and nothing else, which also works when
the checksum database is out of reach.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from dev.plane.layout import State
from dev.plane.pins import ALL, BY_NAME, Component

GO_BUILD_FLAGS = ["-trimpath", "-ldflags", "-s -w"]
PIN_FILE = ".pin"
"""Inside a cache folder: the digest of the build inputs it was built from."""
SECONDS_FILE = ".build-seconds"


class MissingTool(RuntimeError):
    """A build tool is not installed; the message says what to install."""


def is_built(c: Component) -> bool:
    pin = c.cache_dir / PIN_FILE
    return pin.is_file() and pin.read_text().strip() == c.digest


def _go_version() -> tuple[int, int]:
    if not shutil.which("go"):
        raise MissingTool(
            "Go is not installed: install Go 1.26 or newer (the go command on PATH) to build "
            "etcd, Kubernetes, helm and MinIO."
        )
    out = subprocess.run(["go", "version"], capture_output=True, text=True, check=True).stdout
    m = re.search(r"go(\d+)\.(\d+)", out)
    if not m:
        raise MissingTool(f"cannot read the Go version from {out!r}")
    return int(m.group(1)), int(m.group(2))


def _required_go(c: Component) -> tuple[int, int]:
    m = re.search(r"^go (\d+)\.(\d+)", (c.source / "go.mod").read_text(), re.M)
    return (int(m.group(1)), int(m.group(2))) if m else (1, 0)


def check_tools(components: list[Component]) -> None:
    """Raises MissingTool naming every tool the given builds need and the machine lacks."""
    missing: list[str] = []
    go_builds = [c for c in components if c.kind == "go"]
    if go_builds:
        try:
            have = _go_version()
            need = max(_required_go(c) for c in go_builds)
            if have < need:
                missing.append(
                    f"Go {need[0]}.{need[1]} or newer (found {have[0]}.{have[1]}; builds run "
                    "with GOTOOLCHAIN=local and download no toolchain)"
                )
        except MissingTool as e:
            missing.append(str(e))
    if any(c.kind == "maven" for c in components):
        if not shutil.which("java"):
            missing.append(
                "Java 17 or newer for Kafka (Debian: apt-get install openjdk-17-jre-headless)"
            )
        if not shutil.which("mvn"):
            missing.append("Maven to fetch Kafka's jars (Debian: apt-get install maven)")
    if missing:
        listing = "\n  - ".join(missing)
        raise MissingTool(f"cannot build; please install:\n  - {listing}")


def go_env() -> dict[str, str]:
    env = dict(os.environ)
    flags = env.get("GOFLAGS", "").split()
    flags = [f for f in flags if not f.startswith("-mod=")] + ["-mod=readonly"]
    env.update(GOTOOLCHAIN="local", CGO_ENABLED="0", GOSUMDB="off", GOFLAGS=" ".join(flags))
    return env


def _go_flags(c: Component) -> list[str]:
    if not c.stamp_version:
        return GO_BUILD_FLAGS
    # Without it the kubelet reports v0.0.0-master, which kubectl cannot parse.
    stamp = f"-X k8s.io/component-base/version.gitVersion={c.version}"
    return ["-trimpath", "-ldflags", f"-s -w {stamp}"]


def _build_go(c: Component, out: Path, log: Path) -> None:
    bin_dir = out / "bin"
    bin_dir.mkdir(parents=True)
    with log.open("a") as f:
        # Commands whose binary name is the package's last element build together, in one
        # `go build -o dir/` (the first build's exact command line); the others one by one.
        together = [p for n, p in c.binaries.items() if p.rsplit("/", 1)[-1] == n]
        alone = {n: p for n, p in c.binaries.items() if p.rsplit("/", 1)[-1] != n}
        runs: list[list[str]] = []
        if together:
            runs.append([*_go_flags(c), "-o", f"{bin_dir}/", *together])
        runs += [[*_go_flags(c), "-o", str(bin_dir / n), p] for n, p in alone.items()]
        for args in runs:
            cmd = ["go", "build", *args]
            f.write(f"$ (cd {c.source} && {' '.join(cmd)})\n")
            f.flush()
            subprocess.run(cmd, cwd=c.source, env=go_env(), stdout=f, stderr=f, check=True)


def _build_maven(c: Component, out: Path, log: Path) -> None:
    cmd = [
        "mvn", "-q", "-B", "-f", str(c.source / "pom.xml"), "dependency:copy-dependencies",
        f"-DoutputDirectory={out / 'libs'}", "-DincludeScope=runtime",
    ]  # fmt: skip
    with log.open("a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        subprocess.run(cmd, stdout=f, stderr=f, check=True)


def build(c: Component, state: State) -> float | None:
    """Builds `c` if its cache folder is missing or stale; returns seconds spent, or None."""
    if is_built(c):
        return None
    state.logs.mkdir(parents=True, exist_ok=True)
    log = state.logs / f"build-{c.name}.log"
    log.write_text(f"building {c.name} {c.version} into {c.cache_dir}\n")
    partial = c.cache_dir.with_name(c.cache_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    print(f"dev/cluster: building {c.name} {c.version} (log: {log})", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    try:
        (_build_go if c.kind == "go" else _build_maven)(c, partial, log)
    except subprocess.CalledProcessError as e:
        tail = "".join(log.read_text().splitlines(keepends=True)[-20:])
        raise RuntimeError(f"building {c.name} failed ({e}); end of {log}:\n{tail}") from e
    seconds = time.monotonic() - t0
    (partial / PIN_FILE).write_text(c.digest + "\n")
    (partial / SECONDS_FILE).write_text(f"{seconds:.0f}\n")
    shutil.rmtree(c.cache_dir, ignore_errors=True)
    partial.rename(c.cache_dir)
    print(f"dev/cluster: built {c.name} {c.version} in {seconds:.0f} s", file=sys.stderr)
    return seconds


def build_all(state: State, names: list[str] | None = None) -> None:
    """Builds every missing component (or the named ones), then links them into state.bin."""
    unknown = sorted(set(names or ()) - set(BY_NAME))
    if unknown:
        raise RuntimeError(f"no component {', '.join(unknown)}; known: {', '.join(BY_NAME)}")
    todo = [c for c in ALL if (names is None or c.name in names)]
    check_tools([c for c in todo if not is_built(c)])
    for c in todo:
        build(c, state)
    link_bin(state)


def link_bin(state: State) -> None:
    """Points `dev/.state/bin/<binary>` at the cached binaries (REWIND_DEV_BIN)."""
    state.bin.mkdir(parents=True, exist_ok=True)
    for c in ALL:
        for name in c.binaries:
            link = state.bin / name
            if link.is_symlink() or link.exists():
                link.unlink()
            if c.binary(name).exists():
                link.symlink_to(c.binary(name))
