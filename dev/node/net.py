"""This cluster's node network, derived from its state folder (no side effects).

Pods are in 198.18.N.0/24 and Services in 198.19.N.0/24 (198.18.0.0/15 is set aside for
test networks), N from a digest of the state folder, so that two checkouts' clusters on
one machine do not overlap; the bridge and the pods' cgroup root are named the same way.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from dev.plane.layout import State


@dataclass(frozen=True)
class NodeNet:
    """This cluster's addresses and names, derived from its state folder."""

    index: int
    """N in 198.18.N.0/24 and 198.19.N.0/24."""
    tag: str
    """A short hex name for the bridge and the cgroup root."""

    @classmethod
    def of(cls, state: State) -> NodeNet:
        h = hashlib.sha256(str(state.root).encode()).digest()
        return cls(index=h[0], tag=h[1:4].hex())

    @property
    def pod_cidr(self) -> str:
        return f"198.18.{self.index}.0/24"

    @property
    def gateway(self) -> str:
        """The bridge's address on the node: the node IP, where the kubelet listens."""
        return f"198.18.{self.index}.1"

    @property
    def service_cidr(self) -> str:
        return f"198.19.{self.index}.0/24"

    @property
    def kubernetes_service_ip(self) -> str:
        """The `kubernetes` Service's ClusterIP: the first of the range, by the API
        server's rule, so the API server's certificate names it."""
        return f"198.19.{self.index}.1"

    @property
    def bridge(self) -> str:
        return f"rwd{self.tag}"

    @property
    def cgroup_root(self) -> str:
        return f"/rewind-dev-{self.tag}"
