"""The kubelet's main loop: watch the pods bound to the node, hand each to a pod worker.

Flows through: pod events from the apiserver (a watch on ``spec.nodeName``, re-listed
when it expires and every ``resync`` seconds), the state folder left by an earlier
kubelet; out go pod workers (one per pod uid) and the node's heartbeat.

What must stay true:

- one worker per pod uid; a new pod that reuses a name waits for the worker of the old
  one to finish, because they share the pod folder;
- on start, processes of pods that no longer exist are stopped, and the addresses of
  pods that do exist are reserved before any new pod gets one;
- a pod whose worker finished (deleted, processes gone) is not picked up again while it
  lingers in the API (e.g. a Job pod held by the job-tracking finalizer);
- on SIGTERM the pods' processes are stopped (``dev/cluster down`` leaves nothing
  behind) unless ``keep_pods_on_exit``; after a crash they keep running and the next
  kubelet adopts them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dev.kubelet.api import Api, WatchExpiredError
from dev.kubelet.images import ImageMap
from dev.kubelet.ipam import PodIPAllocator, is_pod_address
from dev.kubelet.logserver import LogServer
from dev.kubelet.node import NodeAgent, NodeSettings
from dev.kubelet.podworker import KubeletContext, PodWorker, kill_and_wait, pod_dir_name
from dev.kubelet.runtime import ContainerProcess, namespaces_supported

JsonDict = dict[str, Any]
log = logging.getLogger("kubelet")


@dataclass(frozen=True)
class KubeletSettings:
    """How the process kubelet runs. Defaults suit tests: short back-offs, one node."""

    kubeconfig: str
    state_dir: Path
    repo_root: Path
    images: Path
    node_name: str = "rewind-dev-node"
    port: int = 10250
    """HTTPS port of /containerLogs on 127.0.0.1 (0: no log endpoint)."""
    keep_pods_on_exit: bool = False
    backoff_initial: float = 1.0
    """First restart delay in seconds; doubles per crash. Kubernetes uses 10 s."""
    backoff_max: float = 10.0
    """Cap of the restart delay. Kubernetes uses 300 s; tests need crash loops to move."""
    cpu: str = "2"
    memory: str = ""
    pods: str = "110"
    resync: float = 60.0
    taints: tuple[str, ...] = ()


def read_records(state_dir: Path) -> list[JsonDict]:
    """Every pod record (``state.json``) an earlier kubelet left."""
    records = []
    for path in sorted((state_dir / "pods").glob("*/state.json")):
        with contextlib.suppress(json.JSONDecodeError, OSError):
            records.append(json.loads(path.read_text()))
    return records


def stop_recorded(record: JsonDict, grace: float) -> None:
    """Stop the processes of a pod record (by pid and start time, never by name)."""
    for entry in (record.get("containers") or {}).values():
        if entry.get("pid"):
            proc = ContainerProcess.adopt(
                int(entry["pid"]), int(entry.get("pidStart") or 0), Path(entry["exitFile"])
            )
            kill_and_wait(proc, grace)


def cleanup_state(state_dir: Path, grace: float = 5.0) -> int:
    """Stop every process any kubelet recorded under ``state_dir``; returns how many pods."""
    records = read_records(state_dir)
    for record in records:
        stop_recorded(record, grace)
    return len(records)


class Kubelet:
    def __init__(self, settings: KubeletSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._workers: dict[str, PodWorker] = {}
        self._by_dir: dict[str, PodWorker] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._stop = threading.Event()

    def _context(self, api: Api, allocatable: dict[str, str]) -> KubeletContext:
        s = self.settings
        host, port = api.server_address()
        venv_bin = s.repo_root / ".venv" / "bin"
        path = os.environ.get(
            "PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        )
        isolate = namespaces_supported()
        if not isolate:
            log.warning(
                "no private mount namespaces here: volumes are passed as REWIND_DEV_VOLUME_<NAME>"
            )
        return KubeletContext(
            api=api,
            images=ImageMap(s.images, s.repo_root),
            ipam=PodIPAllocator(),
            node_name=s.node_name,
            state_dir=s.state_dir,
            allocatable=allocatable,
            service_env={
                "KUBERNETES_SERVICE_HOST": host,
                "KUBERNETES_SERVICE_PORT": str(port),
                "KUBERNETES_SERVICE_PORT_HTTPS": str(port),
                "KUBERNETES_PORT": f"tcp://{host}:{port}",
            },
            base_env={
                "PATH": f"{venv_bin}:{path}",
                "VIRTUAL_ENV": str(s.repo_root / ".venv"),
                "PYTHONUNBUFFERED": "1",
                "HOME": os.environ.get("HOME", "/root"),
                "LANG": os.environ.get("LANG", "C.UTF-8"),
                # dev/cluster's marker: `down` finds stray processes of the cluster by it.
                **{k: v for k, v in os.environ.items() if k == "REWIND_DEV_CLUSTER"},
            },
            isolate=isolate,
            backoff_initial=s.backoff_initial,
            backoff_max=s.backoff_max,
        )

    def container_running(self, namespace: str, pod: str, container: str) -> bool:
        with self._lock:
            worker = self._by_dir.get(pod_dir_name(namespace, pod))
        return worker is not None and worker.container_running(container)

    def run(self, stop: threading.Event) -> None:
        s = self.settings
        s.state_dir.mkdir(parents=True, exist_ok=True)
        api = Api(s.kubeconfig)
        node_settings = NodeSettings(
            s.node_name, s.cpu, s.memory, s.pods, s.port or 10250, taints=s.taints
        )
        node = NodeAgent(api, node_settings)
        node.register()
        node.start()
        logs = None
        if s.port:
            logs = LogServer(s.state_dir, s.node_name, s.port, self.container_running)
            logs.start()
        ctx = self._context(api, node.allocatable)
        pods, rv = api.list_node_pods(s.node_name)
        self._adopt(ctx, pods)
        for pod in pods:
            self._dispatch(ctx, "ADDED", pod)
        log.info("kubelet for node %s running; %d pod(s) bound", s.node_name, len(pods))
        watcher = threading.Thread(
            target=self._watch, args=(ctx, api, rv), name="pod-watch", daemon=True
        )
        watcher.start()
        while not stop.wait(1.0):
            self._reap()
        self._stop.set()
        node.stop()
        if logs is not None:
            logs.stop()
        self._shutdown()

    def _adopt(self, ctx: KubeletContext, pods: list[JsonDict]) -> None:
        """Reserve the addresses of known pods; stop what belongs to pods that are gone."""
        alive = {p["metadata"]["uid"] for p in pods}
        for record in read_records(self.settings.state_dir):
            folder = (
                self.settings.state_dir / "pods" / pod_dir_name(record["namespace"], record["name"])
            )
            if record.get("uid") in alive:
                if is_pod_address(record["podIP"]):
                    with contextlib.suppress(ValueError):  # the worker sorts it out
                        ctx.ipam.reserve(record["uid"], record["podIP"])
                continue
            log.info(
                "pod %s/%s is gone: stopping what is left of it",
                record["namespace"],
                record["name"],
            )
            stop_recorded(record, 2.0)
            for sub in ("volumes", "run"):
                shutil.rmtree(folder / sub, ignore_errors=True)
            (folder / "state.json").unlink(missing_ok=True)

    def _watch(self, ctx: KubeletContext, api: Api, rv: str) -> None:
        last_list = time.monotonic()
        while not self._stop.is_set():
            try:
                if time.monotonic() - last_list >= self.settings.resync:
                    rv = self._relist(ctx, api)
                    last_list = time.monotonic()
                for etype, pod in api.watch_node_pods(
                    self.settings.node_name, rv, int(self.settings.resync)
                ):
                    if self._stop.is_set():
                        return
                    rv = str(pod["metadata"].get("resourceVersion") or rv)
                    if etype != "BOOKMARK":
                        self._dispatch(ctx, etype, pod)
            except WatchExpiredError:
                rv = self._relist(ctx, api)
                last_list = time.monotonic()
            except Exception:
                log.exception("pod watch failed; listing again")
                if self._stop.wait(1.0):
                    return
                with contextlib.suppress(Exception):
                    rv = self._relist(ctx, api)
                    last_list = time.monotonic()

    def _relist(self, ctx: KubeletContext, api: Api) -> str:
        pods, rv = api.list_node_pods(self.settings.node_name)
        present = {p["metadata"]["uid"] for p in pods}
        with self._lock:
            vanished = [w for uid, w in self._workers.items() if uid not in present]
        for worker in vanished:
            worker.forget()
        for pod in pods:
            self._dispatch(ctx, "MODIFIED", pod)
        return rv

    def _dispatch(self, ctx: KubeletContext, etype: str, pod: JsonDict) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        with self._lock:
            worker = self._workers.get(uid)
            if etype == "DELETED":
                self._finished.pop(uid, None)
                if worker is not None:
                    worker.forget()
                return
            if uid in self._finished or self._stop.is_set():
                return
            if worker is not None:
                worker.update(pod)
                return
            key = pod_dir_name(meta["namespace"], meta["name"])
            predecessor = self._by_dir.get(key)
            if predecessor is not None:
                predecessor.forget()  # a new pod of this name: the old one is surely gone
            worker = PodWorker(ctx, pod, predecessor)
            self._workers[uid] = worker
            self._by_dir[key] = worker
        worker.start()

    def _reap(self) -> None:
        with self._lock:
            for uid, worker in list(self._workers.items()):
                if worker.done.is_set():
                    del self._workers[uid]
                    key = pod_dir_name(worker.namespace, worker.name)
                    if self._by_dir.get(key) is worker:
                        del self._by_dir[key]
                    self._finished[uid] = None
            while len(self._finished) > 10000:
                self._finished.popitem(last=False)

    def _shutdown(self) -> None:
        keep = self.settings.keep_pods_on_exit
        with self._lock:
            workers = list(self._workers.values())
        log.info(
            "kubelet stopping; %s the processes of %d pod(s)",
            "keeping" if keep else "stopping",
            len(workers),
        )
        for worker in workers:
            worker.shutdown(keep_processes=keep)
        for worker in workers:
            worker.done.wait(60)
