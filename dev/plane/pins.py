"""The pinned components: what each one is built from and which binaries it yields.

A pin is read from the committed build input (a wrapper module's go.mod, or the Kafka
pom), so moving a version is a one-line change there. The cache folder is named
`<component>-<version>`, and a digest of the build inputs is kept beside the binaries,
so a changed go.sum or pom also triggers a rebuild.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from dev.plane.layout import REPO, cache_root


@dataclass(frozen=True)
class Component:
    """One cached build: either Go packages from a wrapper module, or Maven jars."""

    name: str
    source: Path
    """The folder holding the build inputs (go.mod and go.sum, or pom.xml)."""
    pinned_module: str | None = None
    """Go: the required module whose version is the pin."""
    binaries: dict[str, str] = field(default_factory=dict)
    """Go: binary name -> package path."""
    stamp_version: bool = False
    """Go: link the pinned version in as Kubernetes' gitVersion (a kubelet reports it)."""
    own_code: tuple[str, ...] = ()
    """Go: files of the wrapper module that are code of ours (a main package), digested
    with go.mod and go.sum."""

    @property
    def kind(self) -> str:
        return "go" if self.pinned_module else "maven"

    @property
    def inputs(self) -> list[Path]:
        names = ["go.mod", "go.sum", *self.own_code] if self.kind == "go" else ["pom.xml"]
        return [self.source / n for n in names]

    @property
    def version(self) -> str:
        if self.pinned_module:
            text = (self.source / "go.mod").read_text()
            pattern = rf"^\s*(?:require\s+)?{re.escape(self.pinned_module)}\s+(\S+)"
            m = re.search(pattern, text, re.M)
            if not m:
                raise RuntimeError(f"{self.source}/go.mod does not require {self.pinned_module}")
            return m.group(1)
        pom = (self.source / "pom.xml").read_text()
        m = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom)
        if not m:
            raise RuntimeError(f"{self.source}/pom.xml has no <kafka.version>")
        return m.group(1)

    @property
    def digest(self) -> str:
        """Digest of the build inputs; a different digest means the cache is stale."""
        h = hashlib.sha256()
        for p in self.inputs:
            h.update(p.read_bytes())
        return h.hexdigest()[:16]

    @property
    def cache_dir(self) -> Path:
        return cache_root() / f"{self.name}-{self.version}"

    @property
    def bin_dir(self) -> Path:
        return self.cache_dir / "bin"

    def binary(self, name: str) -> Path:
        return self.bin_dir / name


DEV = REPO / "dev"

KUBERNETES = Component(
    name="kubernetes",
    source=DEV / "k8s",
    pinned_module="k8s.io/kubernetes",
    binaries={
        c: f"k8s.io/kubernetes/cmd/{c}"
        for c in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
    },
)
ETCD = Component(
    name="etcd",
    source=DEV / "etcd",
    pinned_module="go.etcd.io/etcd/server/v3",
    binaries={"etcd": "go.etcd.io/etcd/server/v3"},
)
HELM = Component(
    name="helm",
    source=DEV / "helm",
    pinned_module="helm.sh/helm/v3",
    binaries={"helm": "helm.sh/helm/v3/cmd/helm"},
)
MINIO = Component(
    name="minio",
    source=DEV / "minio",
    pinned_module="github.com/minio/minio",
    binaries={"minio": "github.com/minio/minio"},
)
KAFKA = Component(name="kafka", source=DEV / "kafka")
KUBERNETES_NODE = Component(
    name="kubernetes-node",
    source=DEV / "k8s-node",
    pinned_module="k8s.io/kubernetes",
    binaries={c: f"k8s.io/kubernetes/cmd/{c}" for c in ("kubelet", "kube-proxy")},
    stamp_version=True,
)

COREDNS = Component(
    name="coredns",
    source=DEV / "coredns",
    pinned_module="github.com/coredns/coredns",
    # Our own main package: CoreDNS with the few plugins the node needs (main.go).
    binaries={"coredns": "rewind.dev/dev/coredns"},
    own_code=("main.go",),
)

ALL: tuple[Component, ...] = (
    ETCD, KUBERNETES, KUBERNETES_NODE, COREDNS, HELM, MINIO, KAFKA,
)  # fmt: skip
"""Every binary the cluster needs: the control plane, the node's kubelet and kube-proxy
(their own cache entry), the node's DNS, kubectl, helm, MinIO and Kafka."""
BY_NAME = {c.name: c for c in ALL}
