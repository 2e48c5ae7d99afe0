"""One pod's life on the node: volumes, init containers, containers, probes, deletion.

Flows through: the latest pod object (from the kubelet's watch), the shared
``KubeletContext``; out go processes, the pod's status patches, Events, the final
deletion, and ``state.json`` in the pod's folder (what a restarted kubelet adopts).

The worker is one thread that wakes on every pod update or probe verdict and at least
every ``tick`` seconds, and takes one step: observe the processes, then act. Steps are
idempotent; a failed API call is simply retried at the next step.

What must stay true:

- init containers run one at a time, in order, and each must exit 0 before the next (and
  before any container) starts;
- a container restarts according to ``restartPolicy`` after a back-off that doubles from
  ``backoff_initial`` up to ``backoff_max`` (waiting reason CrashLoopBackOff), and every
  restart increments ``restartCount``; liveness or startup failure kills it first;
- deletion: SIGTERM to every container's process group, SIGKILL after the grace period,
  a terminal phase in the status, then the final delete (grace 0, uid precondition),
  so pods never hang in Terminating; the pod's address is freed only after its
  processes are gone;
- a pod that reached Succeeded or Failed never runs again, even after a kubelet restart.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dev.kubelet.api import Api
from dev.kubelet.envbuild import (
    ConfigError,
    PodContext,
    container_env,
    expand_argv,
    pod_env,
)
from dev.kubelet.images import Image, ImageMap, ImageNotFoundError, container_argv
from dev.kubelet.ipam import PodIPAllocator, is_pod_address
from dev.kubelet.node import HOST_IP
from dev.kubelet.podstatus import (
    ContainerView,
    Terminated,
    now_rfc3339,
    pod_status,
)
from dev.kubelet.probes import (
    ProbeKind,
    ProbeTiming,
    ProbeTracker,
    http_get,
    run_exec,
    tcp_socket,
)
from dev.kubelet.runtime import ContainerProcess, LaunchSpec, Mount, exec_in
from dev.kubelet.termination import DEFAULT_PATH as TERMINATION_MESSAGE_PATH
from dev.kubelet.termination import message_file, termination_message
from dev.kubelet.volumes import VolumeError, setup_volumes

JsonDict = dict[str, Any]
log = logging.getLogger("kubelet.pod")


@dataclass
class KubeletContext:
    """What every pod worker shares."""

    api: Api
    images: ImageMap
    ipam: PodIPAllocator
    node_name: str
    state_dir: Path
    allocatable: dict[str, str]
    service_env: dict[str, str]
    base_env: dict[str, str]
    isolate: bool
    backoff_initial: float = 1.0
    backoff_max: float = 10.0
    tick: float = 0.5
    volume_refresh: float = 15.0
    shutdown_grace: float = 10.0


def pod_dir_name(namespace: str, name: str) -> str:
    return f"{namespace}_{name}"


def _parse_time(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


class TokenCache:
    """Service-account tokens for one pod, refreshed after 80% of their lifetime."""

    def __init__(self, api: Api, pod: JsonDict) -> None:
        self._api = api
        self._pod = pod
        self._tokens: dict[tuple[str | None, int], tuple[str, float]] = {}

    def __call__(self, audience: str | None, expiration: int) -> str:
        key = (audience, expiration)
        cached = self._tokens.get(key)
        if cached is not None and time.time() < cached[1]:
            return cached[0]
        meta = self._pod["metadata"]
        sa = self._pod["spec"].get("serviceAccountName") or "default"
        try:
            token = self._api.request_token(
                meta["namespace"], sa, audience, expiration, meta["name"], meta["uid"]
            )
        except Exception as exc:
            raise VolumeError(f"cannot get a token for service account {sa!r}: {exc}") from exc
        issued = time.time()
        expires = _parse_time(token.expiration)
        self._tokens[key] = (token.token, issued + 0.8 * (expires - issued))
        return token.token


class ProbeRunner:
    """One probe of one container instance, on its own thread."""

    def __init__(
        self,
        kind: ProbeKind,
        spec: JsonDict,
        attempt: Callable[[float], bool],
        gate: Callable[[], bool],
        on_change: Callable[[], None],
        label: str,
    ) -> None:
        self.tracker = ProbeTracker(kind, ProbeTiming.from_spec(spec))
        self.spec = spec
        self._attempt = attempt
        self._gate = gate
        self._on_change = on_change
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"probe {label} {kind}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        timing = self.tracker.timing
        if self._stop.wait(timing.initial_delay):
            return
        while True:
            if self._gate():
                try:
                    ok = self._attempt(timing.timeout)
                except Exception:
                    log.exception("probe attempt failed")
                    ok = False
                if self._stop.is_set():
                    return
                with self._lock:
                    changed = self.tracker.record(ok)
                    failed = self.tracker.failed
                if changed or failed or not ok:
                    self._on_change()
                if self.tracker.kind == "startup" and self.tracker.decided:
                    return
            if self._stop.wait(timing.period):
                return

    @property
    def verdict(self) -> bool:
        with self._lock:
            return self.tracker.verdict

    @property
    def failed(self) -> bool:
        with self._lock:
            return self.tracker.failed

    def stop(self) -> None:
        self._stop.set()


@dataclass
class Container:
    """The kubelet's memory of one container (all its instances)."""

    spec: JsonDict
    init: bool
    restart_count: int = 0
    process: ContainerProcess | None = None
    container_id: str | None = None
    started_at: str | None = None
    started_mono: float = 0.0
    terminated: Terminated | None = None
    last_terminated: Terminated | None = None
    finished: bool = False
    waiting_reason: str | None = None
    waiting_message: str | None = None
    next_start: float = 0.0
    backoff: float = 0.0
    image: Image | None = None
    env: dict[str, str] = field(default_factory=dict)
    probes: dict[str, ProbeRunner] = field(default_factory=dict)
    kill_deadline: float | None = None
    killed_hard: bool = False
    kill_reason: str | None = None
    start_attempts: int = 0

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def running(self) -> bool:
        return self.process is not None

    def stop_probes(self) -> None:
        for probe in self.probes.values():
            probe.stop()
        self.probes = {}

    def is_started(self) -> bool:
        startup = self.probes.get("startup")
        return self.running and (startup is None or startup.verdict)

    def is_ready(self) -> bool:
        readiness = self.probes.get("readiness")
        return self.is_started() and (readiness is None or readiness.verdict)

    def succeeded(self) -> bool:
        return self.finished and self.terminated is not None and self.terminated.exit_code == 0

    def view(self, waiting_default: str = "ContainerCreating") -> ContainerView:
        common: dict[str, Any] = {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "image_id": self.image.image_id if self.image else "",
            "restart_count": self.restart_count,
            "container_id": self.container_id,
            "last_terminated": self.last_terminated,
        }
        if self.running:
            return ContainerView(
                state="running",
                started_at=self.started_at,
                ready=self.is_ready(),
                started=self.is_started(),
                **common,
            )
        if self.finished and self.terminated is not None:
            return ContainerView(state="terminated", terminated=self.terminated, **common)
        return ContainerView(
            state="waiting",
            waiting_reason=self.waiting_reason or waiting_default,
            waiting_message=self.waiting_message,
            will_restart=self.last_terminated is not None,
            **common,
        )

    def to_record(self) -> JsonDict:
        proc = self.process
        return {
            "restartCount": self.restart_count,
            "containerID": self.container_id,
            "startedAt": self.started_at,
            "pid": proc.pid if proc else None,
            "pidStart": proc.pid_start if proc else None,
            "exitFile": str(proc.exit_file) if proc else None,
            "terminated": self.terminated.to_json() if self.terminated else None,
            "lastTerminated": self.last_terminated.to_json() if self.last_terminated else None,
            "finished": self.finished,
        }

    def restore(self, record: JsonDict) -> None:
        self.restart_count = int(record.get("restartCount") or 0)
        self.container_id = record.get("containerID")
        self.started_at = record.get("startedAt")
        if record.get("terminated"):
            self.terminated = Terminated.from_json(record["terminated"])
        if record.get("lastTerminated"):
            self.last_terminated = Terminated.from_json(record["lastTerminated"])
        self.finished = bool(record.get("finished"))
        if record.get("pid"):
            self.process = ContainerProcess.adopt(
                int(record["pid"]), int(record.get("pidStart") or 0), Path(record["exitFile"])
            )
            self.started_mono = time.monotonic()


def _should_restart(container: Container, restart_policy: str, exit_code: int) -> bool:
    if container.init:
        return restart_policy != "Never" and exit_code != 0
    if restart_policy == "Always":
        return True
    if restart_policy == "OnFailure":
        return exit_code != 0
    return False


def _rv(pod: JsonDict) -> int:
    try:
        return int(pod["metadata"].get("resourceVersion") or 0)
    except ValueError:
        return 0


class PodWorker:
    """Runs one pod. ``update``/``forget``/``shutdown`` are called from other threads."""

    def __init__(
        self, ctx: KubeletContext, pod: JsonDict, predecessor: PodWorker | None = None
    ) -> None:
        meta = pod["metadata"]
        self.ctx = ctx
        self.uid: str = meta["uid"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.dir = ctx.state_dir / "pods" / pod_dir_name(self.namespace, self.name)
        self._pod = pod
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._gone = False
        self._shutdown: str | None = None  # "stop": kill the processes, "keep": leave them
        self._predecessor = predecessor
        self._terminal: str | None = None
        self._terminating_since: float | None = None
        self._grace = 30.0
        self._stopped_by_shutdown: list[Container] = []
        self._last_status: JsonDict | None = None
        self._volumes: dict[str, Path] = {}
        self._volumes_at = -1e9
        self._volume_error: str | None = None
        self._volumes_ready = False
        self._start_time = now_rfc3339()
        self.pod_ip = ""
        spec = pod["spec"]
        self.init_containers = [Container(c, init=True) for c in spec.get("initContainers") or []]
        self.containers = [Container(c, init=False) for c in spec.get("containers") or []]
        self._tokens = TokenCache(ctx.api, pod)
        self.done = threading.Event()
        self.thread = threading.Thread(
            target=self._run, name=f"pod {self.namespace}/{self.name}", daemon=True
        )

    # called from other threads

    def start(self) -> None:
        self.thread.start()

    def update(self, pod: JsonDict) -> None:
        with self._lock:
            if _rv(pod) >= _rv(self._pod):
                self._pod = pod
        self._wake.set()

    def forget(self) -> None:
        """The pod is gone from the API (force-deleted): stop it without API calls."""
        self._gone = True
        self._wake.set()

    def shutdown(self, keep_processes: bool) -> None:
        self._shutdown = "keep" if keep_processes else "stop"
        self._wake.set()

    def container_running(self, name: str) -> bool:
        return any(c.name == name and c.running for c in [*self.init_containers, *self.containers])

    # the worker thread

    def _all(self) -> list[Container]:
        return [*self.init_containers, *self.containers]

    def _run(self) -> None:
        if self._predecessor is not None:
            self._predecessor.done.wait()
        try:
            while not self._gone and self._shutdown is None:
                try:
                    self._setup()
                    break
                except Exception:
                    log.exception("pod %s/%s: setup failed; retrying", self.namespace, self.name)
                    self._wake.wait(2.0)
            if not self.pod_ip and not self._gone:
                return  # the kubelet stops before this pod was ever set up
            while True:
                try:
                    if self._step():
                        break
                except Exception:
                    log.exception("pod %s/%s: step failed; retrying", self.namespace, self.name)
                self._wake.wait(self.ctx.tick)
                self._wake.clear()
        finally:
            self.done.set()

    def _pod_snapshot(self) -> JsonDict:
        with self._lock:
            return self._pod

    def _record_path(self) -> Path:
        return self.dir / "state.json"

    def _setup(self) -> None:
        """Adopt what an earlier kubelet left for this very pod, or start fresh."""
        self.dir.mkdir(parents=True, exist_ok=True)
        record: JsonDict | None = None
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            record = json.loads(self._record_path().read_text())
        if record is not None and record.get("uid") != self.uid:
            log.info(
                "pod %s/%s: discarding the folder of an earlier pod of that name",
                self.namespace,
                self.name,
            )
            self._kill_recorded(record)
            self._cleanup(keep_logs=False)
            self.dir.mkdir(parents=True, exist_ok=True)
            record = None
        if record is not None:
            self.pod_ip = record["podIP"]
            if is_pod_address(self.pod_ip):
                try:
                    self.ctx.ipam.reserve(self.uid, self.pod_ip)
                except ValueError:
                    # Never two pods on one address; this one's processes keep the old
                    # address until they restart, the status shows the new one.
                    self.pod_ip = self.ctx.ipam.allocate(self.uid)
            self._start_time = record.get("startTime") or self._start_time
            self._terminal = record.get("terminal")
            for c in self._all():
                prefix = "init/" if c.init else ""
                if prefix + c.name in record.get("containers", {}):
                    c.restore(record["containers"][prefix + c.name])
            for c in self._all():
                if c.running:
                    self._start_probes(c)
            log.info("pod %s/%s: adopted (ip %s)", self.namespace, self.name, self.pod_ip)
        else:
            # hostNetwork pods share the node's address, as on a real node.
            host_network = bool(self._pod_snapshot()["spec"].get("hostNetwork"))
            self.pod_ip = HOST_IP if host_network else self.ctx.ipam.allocate(self.uid)
            status = self._pod_snapshot().get("status") or {}
            if status.get("phase") in ("Succeeded", "Failed"):
                # Finished before this kubelet knew it (e.g. state wiped): never run again.
                self._terminal = status["phase"]
            self._save()

    def _save(self) -> None:
        record = {
            "uid": self.uid,
            "namespace": self.namespace,
            "name": self.name,
            "podIP": self.pod_ip,
            "startTime": self._start_time,
            "terminal": self._terminal,
            "containers": {
                ("init/" if c.init else "") + c.name: c.to_record() for c in self._all()
            },
        }
        tmp = self._record_path().with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1))
        tmp.replace(self._record_path())

    def _step(self) -> bool:
        """One observe-then-act step; True when this worker is finished."""
        pod = self._pod_snapshot()
        if self._shutdown is not None:
            return self._step_shutdown()
        if self._gone:
            if self._terminate(2.0):
                self._finish()
                return True
            return False
        if pod["metadata"].get("deletionTimestamp"):
            return self._step_deleting(pod)
        if self._terminal is not None:
            return False
        self._ensure_volumes(pod)
        self._sync_containers(pod)
        self._publish(pod)
        return False

    # volumes

    def _pod_context(self) -> PodContext:
        return PodContext(self.pod_ip, HOST_IP, self.ctx.node_name, self.ctx.allocatable)

    def _ensure_volumes(self, pod: JsonDict) -> None:
        """Set up (and periodically refresh) the volumes; containers start only once they exist."""
        now = time.monotonic()
        retry = 2.0 if self._volume_error else self.ctx.volume_refresh
        if now - self._volumes_at < retry:
            return
        self._volumes_at = now
        try:
            self._volumes = setup_volumes(
                pod, self.dir, self.ctx.state_dir, self.ctx.api, self._tokens, self._pod_context()
            )
        except VolumeError as exc:
            if self._volume_error != str(exc):
                message = f"MountVolume.SetUp failed: {exc}"
                self.ctx.api.create_event(pod, "FailedMount", message, True, self.ctx.node_name)
                log.warning("pod %s/%s: %s", self.namespace, self.name, message)
            self._volume_error = str(exc)
            if not self._volumes_ready:
                for c in self._all():
                    c.waiting_message = f"MountVolume.SetUp failed: {exc}"
            return
        if not self._volumes_ready:
            for c in self._all():
                c.waiting_message = None
        self._volume_error = None
        self._volumes_ready = True

    # containers

    def _sync_containers(self, pod: JsonDict) -> None:
        policy = pod["spec"].get("restartPolicy", "Always")
        for c in self.init_containers:
            if c.succeeded():
                continue
            self._drive(pod, c, policy)
            if not c.succeeded():
                for main in self.containers:
                    main.waiting_reason = "PodInitializing"
                return
        for c in self.containers:
            self._drive(pod, c, policy)

    def _drive(self, pod: JsonDict, c: Container, policy: str) -> None:
        now = time.monotonic()
        if c.process is not None:
            exit_status = c.process.poll()
            if exit_status is None:
                self._watch_running(pod, c, now)
                return
            self._on_exit(
                pod,
                c,
                policy,
                exit_status.exit_code,
                exit_status.reason,
                exit_status.signal,
                exit_status.message,
                exit_status.finished_at,
            )
            return
        if c.finished or now < c.next_start or not self._volumes_ready:
            return
        self._start(pod, c)

    def _watch_running(self, pod: JsonDict, c: Container, now: float) -> None:
        if c.kill_deadline is None:
            for kind in ("startup", "liveness"):
                probe = c.probes.get(kind)
                if probe is not None and probe.failed:
                    grace = probe.spec.get("terminationGracePeriodSeconds")
                    if grace is None:
                        grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
                    message = f"Container {c.name} failed {kind} probe, will be restarted"
                    self.ctx.api.create_event(pod, "Killing", message, False, self.ctx.node_name)
                    log.info("pod %s/%s: %s", self.namespace, self.name, message)
                    c.kill_reason = kind
                    c.stop_probes()
                    self._signal(c, signal.SIGTERM, float(grace))
                    return
        elif now >= c.kill_deadline and not c.killed_hard and c.process is not None:
            c.process.signal(signal.SIGKILL)
            c.killed_hard = True

    def _signal(self, c: Container, sig: signal.Signals, grace: float) -> None:
        if c.process is None:
            return
        c.process.signal(sig)
        if c.kill_deadline is None:
            c.kill_deadline = time.monotonic() + grace

    def _on_exit(
        self,
        pod: JsonDict,
        c: Container,
        policy: str,
        code: int,
        reason: str,
        sig: int | None,
        message: str | None,
        finished_at: str,
    ) -> None:
        c.stop_probes()
        c.process = None
        c.kill_deadline = None
        c.killed_hard = False
        message = message or self._termination_message(c, code)
        terminated = Terminated(
            exit_code=code,
            reason=reason
            if reason in ("Completed", "Error", "StartError")
            else ("Completed" if code == 0 else "Error"),
            started_at=c.started_at,
            finished_at=finished_at,
            container_id=c.container_id,
            signal=sig,
            message=message,
        )
        ran = time.monotonic() - c.started_mono
        log.info("pod %s/%s: container %s exited with %d", self.namespace, self.name, c.name, code)
        restart = self._shutdown is None and _should_restart(c, policy, code)
        if restart:
            if ran > 2 * self.ctx.backoff_max:
                c.backoff = 0.0  # it ran well for a while: start the back-off afresh
            c.backoff = min(max(c.backoff * 2, self.ctx.backoff_initial), self.ctx.backoff_max)
            c.next_start = time.monotonic() + c.backoff
            c.last_terminated = terminated
            c.terminated = None
            c.waiting_reason = "CrashLoopBackOff"
            c.waiting_message = (
                f"back-off {c.backoff:.0f}s restarting failed container={c.name} "
                f"pod={self.name}_{self.namespace}({self.uid})"
            )
            self.ctx.api.create_event(
                pod,
                "BackOff",
                "Back-off restarting failed container " + c.name,
                True,
                self.ctx.node_name,
            )
        else:
            c.terminated = terminated
            c.finished = True
        self._save()

    def _termination_message(self, c: Container, code: int) -> str | None:
        """What the instance that just ended left in its termination-message file (or,
        with FallbackToLogsOnError and a failure, its log's tail); the file is spent."""
        if c.container_id is None:
            return None
        path = message_file(self.dir / "run", c.container_id)
        try:
            return termination_message(
                path,
                self.dir / f"{c.name}.log",
                c.spec.get("terminationMessagePolicy"),
                code,
            )
        finally:
            path.unlink(missing_ok=True)

    def _start(self, pod: JsonDict, c: Container) -> None:
        c.start_attempts += 1
        try:
            image = self.ctx.images.resolve(c.spec.get("image", ""))
        except ImageNotFoundError as exc:
            c.waiting_reason = (
                "ErrImagePull"
                if c.waiting_reason not in ("ErrImagePull", "ImagePullBackOff")
                else "ImagePullBackOff"
            )
            c.waiting_message = str(exc)
            if c.waiting_reason == "ErrImagePull":
                self.ctx.api.create_event(
                    pod, "Failed", f"Failed to pull image: {exc}", True, self.ctx.node_name
                )
            c.backoff = min(max(c.backoff * 2, self.ctx.backoff_initial), self.ctx.backoff_max)
            c.next_start = time.monotonic() + c.backoff
            return
        c.image = image
        try:
            pod_vars = pod_env(pod, c.spec, self.ctx.api, self._pod_context(), self.ctx.service_env)
        except ConfigError as exc:
            c.waiting_reason, c.waiting_message = "CreateContainerConfigError", str(exc)
            c.next_start = time.monotonic() + 2.0
            return
        argv = expand_argv(
            container_argv(image, c.spec.get("command"), c.spec.get("args")), pod_vars
        )
        if not argv:
            c.waiting_reason = "CreateContainerError"
            c.waiting_message = (
                f"no command: the pod sets none and {image.ref} has no entrypoint/cmd "
                "in dev/images.yaml"
            )
            c.next_start = time.monotonic() + 2.0
            return
        hostname = pod["spec"].get("hostname") or self.name
        base = {**self.ctx.base_env, "HOSTNAME": hostname}
        env = container_env(base, image.env, pod_vars)
        mounts: list[Mount] = []
        for vm in c.spec.get("volumeMounts") or []:
            folder = self._volumes.get(vm["name"])
            if folder is None:
                continue
            source = folder / vm["subPath"] if vm.get("subPath") else folder
            mounts.append(Mount(str(source), vm["mountPath"], bool(vm.get("readOnly"))))
            if not self.ctx.isolate:
                key = "".join(ch if ch.isalnum() else "_" for ch in vm["name"]).upper()
                env[f"REWIND_DEV_VOLUME_{key}"] = str(source)
        container_id = f"rewind://{secrets.token_hex(16)}"
        if self.ctx.isolate:  # like the kubelet: a fresh file per instance, bound in place
            message_path = message_file(self.dir / "run", container_id)
            message_path.parent.mkdir(parents=True, exist_ok=True)
            message_path.write_bytes(b"")
            message_path.chmod(0o666)
            target = c.spec.get("terminationMessagePath") or TERMINATION_MESSAGE_PATH
            mounts.append(Mount(str(message_path), target))
        restarting = (
            c.last_terminated is not None and c.container_id is not None and c.terminated is None
        )
        if restarting:
            c.restart_count += 1
        log_path = self.dir / f"{c.name}.log"
        if log_path.exists() and (restarting or c.container_id is not None):
            log_path.replace(self.dir / f"{c.name}.previous.log")
        c.container_id = container_id
        c.env = env
        spec = LaunchSpec(
            container_id=c.container_id,
            argv=argv,
            env=env,
            cwd=str(image.dir),
            log_path=log_path,
            run_dir=self.dir / "run",
            mounts=mounts,
            hostname=hostname,
            isolate=self.ctx.isolate,
        )
        try:
            c.process = ContainerProcess.spawn(spec)
        except OSError as exc:
            c.waiting_reason, c.waiting_message = "RunContainerError", str(exc)
            c.next_start = time.monotonic() + 2.0
            return
        c.started_at = now_rfc3339()
        c.started_mono = time.monotonic()
        c.waiting_reason = c.waiting_message = None
        c.kill_reason = None
        self._start_probes(c)
        self._save()
        log.info(
            "pod %s/%s: started %s (pid %d): %s",
            self.namespace,
            self.name,
            c.name,
            c.process.pid,
            argv,
        )
        self.ctx.api.create_event(
            pod, "Started", f"Started container {c.name}", False, self.ctx.node_name
        )

    def _start_probes(self, c: Container) -> None:
        if c.init:
            return
        label = f"{self.namespace}/{self.name}/{c.name}"
        kinds: tuple[tuple[ProbeKind, str], ...] = (
            ("startup", "startupProbe"),
            ("readiness", "readinessProbe"),
            ("liveness", "livenessProbe"),
        )
        for kind, key in kinds:
            spec = c.spec.get(key)
            if not spec:
                continue
            # Readiness and liveness wait until the startup probe (if any) has succeeded.
            gate = (lambda: True) if kind == "startup" else c.is_started
            c.probes[kind] = ProbeRunner(
                kind, spec, self._attempt_for(c, spec), gate, self._wake.set, label
            )

    def _attempt_for(self, c: Container, spec: JsonDict) -> Callable[[float], bool]:
        pod_ip = self.pod_ip
        if "httpGet" in spec:
            return lambda timeout: http_get(spec["httpGet"], pod_ip, c.spec, timeout)
        if "tcpSocket" in spec:
            return lambda timeout: tcp_socket(spec["tcpSocket"], pod_ip, c.spec, timeout)
        if "exec" in spec:
            command = list(spec["exec"].get("command") or [])

            def attempt(timeout: float) -> bool:
                cwd = str(c.image.dir) if c.image else "/"
                return run_exec(
                    exec_in(c.process, command, cwd, self.ctx.isolate), c.env, cwd, timeout
                )

            return attempt
        log.warning(
            "pod %s/%s: probe %s not supported; counted as passing",
            self.namespace,
            self.name,
            sorted(spec),
        )
        return lambda timeout: True

    # status

    def _views(self, pod: JsonDict) -> tuple[list[ContainerView], list[ContainerView], bool]:
        init_failed = any(c.finished and not c.succeeded() for c in self.init_containers)
        init_done = all(c.succeeded() for c in self.init_containers)
        init_views = [
            c.view("PodInitializing" if i else "ContainerCreating")
            for i, c in enumerate(self.init_containers)
        ]
        views = [
            c.view("ContainerCreating" if init_done else "PodInitializing") for c in self.containers
        ]
        return init_views, views, init_failed

    def _publish(self, pod: JsonDict, terminal: str | None = None) -> None:
        init_views, views, init_failed = self._views(pod)
        status = pod_status(
            pod, init_views, views, self.pod_ip, HOST_IP, self._start_time, init_failed, terminal
        )
        comparable = json.dumps(status, sort_keys=True)
        if self._last_status is not None and self._last_status.get("json") == comparable:
            return
        try:
            updated = self.ctx.api.patch_pod_status(self.namespace, self.name, status)
        except Exception as exc:
            log.warning(
                "pod %s/%s: status update failed (%s); retrying", self.namespace, self.name, exc
            )
            return
        self._last_status = {"json": comparable}
        if updated is not None:
            self.update(updated)
        phase = status["phase"]
        if phase in ("Succeeded", "Failed") and self._terminal is None:
            self._terminal = phase
            for c in self._all():
                c.stop_probes()
            self._save()
            log.info("pod %s/%s: %s", self.namespace, self.name, phase)

    # ending

    def _terminate(self, grace: float) -> bool:
        """SIGTERM everything once, SIGKILL after ``grace``; True when all processes are gone."""
        now = time.monotonic()
        if self._terminating_since is None:
            self._terminating_since = now
            for c in self._all():
                c.stop_probes()
                if c.process is not None:
                    c.kill_deadline = None
                    self._signal(c, signal.SIGTERM, grace)
        alive = False
        for c in self._all():
            if c.process is None:
                continue
            exit_status = c.process.poll()
            if exit_status is None:
                alive = True
                if c.kill_deadline is not None and now >= c.kill_deadline and not c.killed_hard:
                    c.process.signal(signal.SIGKILL)
                    c.killed_hard = True
                continue
            c.process = None
            c.terminated = Terminated(
                exit_code=exit_status.exit_code,
                reason=exit_status.reason if exit_status.reason != "StartError" else "Error",
                started_at=c.started_at,
                finished_at=exit_status.finished_at,
                container_id=c.container_id,
                signal=exit_status.signal,
                message=self._termination_message(c, exit_status.exit_code),
            )
            c.finished = True
        return not alive

    def _step_deleting(self, pod: JsonDict) -> bool:
        meta = pod["metadata"]
        if self._terminating_since is None:
            grace = meta.get("deletionGracePeriodSeconds")
            if grace is None:
                grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
            self._grace = float(grace)
            log.info("pod %s/%s: deleting (grace %ss)", self.namespace, self.name, grace)
            if any(c.running for c in self._all()):
                names = ", ".join(c.name for c in self._all() if c.running)
                self.ctx.api.create_event(
                    pod, "Killing", f"Stopping container(s) {names}", False, self.ctx.node_name
                )
        if not self._terminate(self._grace):
            return False
        for c in self._all():
            if not c.finished and c.last_terminated is not None:
                c.terminated, c.finished = c.last_terminated, True
        ran = [c for c in self.containers if c.terminated is not None]
        ok = (
            bool(ran)
            and len(ran) == len(self.containers)
            and all(c.terminated and c.terminated.exit_code == 0 for c in ran)
        )
        if self._terminal is None:
            self._publish(pod, terminal="Succeeded" if ok else "Failed")
        self._finish()
        self.ctx.api.delete_pod_final(self.namespace, self.name, self.uid)
        log.info("pod %s/%s: deleted", self.namespace, self.name)
        return True

    def _step_shutdown(self) -> bool:
        """The kubelet stops: leave the processes, or stop them as a node shutdown would."""
        if self._shutdown == "keep":
            for c in self._all():
                c.stop_probes()
            return True
        if self._terminating_since is None:
            self._stopped_by_shutdown = [c for c in self._all() if c.running]
            grace = self._pod_snapshot()["spec"].get("terminationGracePeriodSeconds", 30)
            self._grace = min(float(grace), self.ctx.shutdown_grace)
        if not self._terminate(self._grace):
            return False
        policy = self._pod_snapshot()["spec"].get("restartPolicy", "Always")
        for c in self._stopped_by_shutdown:
            # The node stopped, not the pod: the next kubelet starts these again, as after
            # a reboot, where the restart policy allows it (Never: the pod fails).
            if c.terminated is not None and _should_restart(c, policy, c.terminated.exit_code):
                c.finished = False
                c.last_terminated, c.terminated = c.terminated, None
        self._save()
        return True

    def _kill_recorded(self, record: JsonDict) -> None:
        """Stop processes an earlier kubelet started for an earlier pod of this name."""
        for entry in (record.get("containers") or {}).values():
            if entry.get("pid"):
                proc = ContainerProcess.adopt(
                    int(entry["pid"]), int(entry.get("pidStart") or 0), Path(entry["exitFile"])
                )
                kill_and_wait(proc, 2.0)

    def _finish(self) -> None:
        """The pod's processes are gone: free its address and its volumes, keep its logs."""
        for c in self._all():
            c.stop_probes()
        self._cleanup(keep_logs=True)
        self.ctx.ipam.release(self.uid)

    def _cleanup(self, keep_logs: bool) -> None:
        for sub in ("volumes", "run"):
            shutil.rmtree(self.dir / sub, ignore_errors=True)
        self._record_path().unlink(missing_ok=True)
        if not keep_logs:
            for path in self.dir.glob("*.log"):
                path.unlink(missing_ok=True)


def kill_and_wait(proc: ContainerProcess, grace: float) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; returns when the process is gone."""
    proc.signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while proc.poll() is None:
        if time.monotonic() >= deadline:
            proc.signal(signal.SIGKILL)
        time.sleep(0.1)
