"""One loopback pod IP per pod: 127.0.x.y with x in 1..254 and y in 1..254.

Linux routes all of 127.0.0.0/8 to the loopback interface, so a process can bind any of
these addresses without configuring anything, and two pods can both listen on port 8080.
127.0.0.0/24 is left to the cluster's own components (etcd, apiserver, MinIO, Kafka).

What must stay true: an address is never given to two live pods; the address of a pod
follows from its uid and the addresses in use (deterministic, so a test run is
reproducible), starting at a hash of the uid so that a freed address is rarely handed to
the next pod at once (clients may still hold the old pod's address).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping

_HOSTS_PER_BLOCK = 254
_BLOCKS = 254
_SIZE = _HOSTS_PER_BLOCK * _BLOCKS


class AddressesExhaustedError(Exception):
    """Every loopback pod address is in use."""


def _address(index: int) -> str:
    block, host = divmod(index, _HOSTS_PER_BLOCK)
    return f"127.0.{block + 1}.{host + 1}"


def is_pod_address(ip: str) -> bool:
    """Whether ``ip`` is inside the pod range (and so may be recorded as a pod's)."""
    parts = ip.split(".")
    if len(parts) != 4 or parts[:2] != ["127", "0"]:
        return False
    try:
        block, host = int(parts[2]), int(parts[3])
    except ValueError:
        return False
    return 1 <= block <= _BLOCKS and 1 <= host <= _HOSTS_PER_BLOCK


class PodIPAllocator:
    """Hands out pod addresses by pod uid. Thread-safe."""

    def __init__(self, taken: Mapping[str, str] | None = None) -> None:
        self._lock = threading.Lock()
        self._by_uid: dict[str, str] = {}
        self._in_use: set[str] = set()
        for uid, ip in (taken or {}).items():
            self.reserve(uid, ip)

    def reserve(self, uid: str, ip: str) -> None:
        """Record an address a pod already has (after a kubelet restart)."""
        with self._lock:
            if ip in self._in_use and self._by_uid.get(uid) != ip:
                raise ValueError(f"{ip} is already in use by another pod")
            self._by_uid[uid] = ip
            self._in_use.add(ip)

    def allocate(self, uid: str) -> str:
        """The pod's address: the one it has, or the first free one from its uid's hash."""
        with self._lock:
            if uid in self._by_uid:
                return self._by_uid[uid]
            start = int.from_bytes(hashlib.sha256(uid.encode()).digest()[:8], "big") % _SIZE
            for step in range(_SIZE):
                ip = _address((start + step) % _SIZE)
                if ip not in self._in_use:
                    self._by_uid[uid] = ip
                    self._in_use.add(ip)
                    return ip
            raise AddressesExhaustedError("all loopback pod addresses are in use")

    def release(self, uid: str) -> None:
        """Free the pod's address (its processes are gone)."""
        with self._lock:
            ip = self._by_uid.pop(uid, None)
            if ip is not None:
                self._in_use.discard(ip)

    def get(self, uid: str) -> str | None:
        with self._lock:
            return self._by_uid.get(uid)
