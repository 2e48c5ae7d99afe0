"""The real node: containerd + runc, the real kubelet and kube-proxy, a CNI bridge.

What flows through here: `dev/cluster up` makes the bridge first (Kafka's
pod listener binds its address), asks for the four process specs (containerd first;
the kubelet, kube-proxy and the node gateway once the API server is up), imports the
image tars of dev/node/images.py into containerd, and `dev/cluster down` calls
`teardown`, which removes every container, network namespace, mount, cgroup, the
bridge and kube-proxy's iptables chains that this cluster made.

What must stay true: every address is loopback or in this cluster's own slice of
198.18.0.0/15 (pods in 198.18.N.0/24, Services in 198.19.N.0/24, N from the state
folder, so that two checkouts' clusters never overlap); pods get no default route, so
they send nothing anywhere but to each other and the node; everything written goes
under the state folder, and the pods' cgroups under one root of this cluster's own.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from dev.node import dns
from dev.node.images import PAUSE_TAG
from dev.node.net import NodeNet
from dev.plane import pins
from dev.plane.components import HOST, Spec, _base_env, admin_ctx, api_get, http_get
from dev.plane.layout import REPO, State
from dev.plane.pki import NODE_NAME

CNI_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
CGROUP_FS = Path("/sys/fs/cgroup")
NAMESPACE = "k8s.io"
"""containerd's namespace for the CRI's containers and images."""


def _dir(state: State) -> Path:
    return state.root / "node"


def socket(state: State) -> Path:
    return _dir(state) / "containerd.sock"


def _cni_bin() -> str:
    for d in CNI_BIN_DIRS:
        if Path(d, "bridge").exists():
            return d
    raise RuntimeError(
        "the CNI plugins are missing: run dev/node/packages (apt-get install "
        "containernetworking-plugins)"
    )


CONTAINERD_TOML = """\
# Written by dev/node/runtime.py; see dev/README.md for why each setting is there.
version = 2
root = "{root}"
state = "{run}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  # This process may not lower oom_score_adj: without it runc fails with
  # "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni_conf}"
  # No registry: an image that was not imported is "pulled" from a loopback port where
  # nothing answers, so a pod that names it fails at once and nothing asks the host's
  # DNS server (outside the ranges we may use) for a registry's name.
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{registries}"
"""

NO_REGISTRY = """\
# Written by dev/node/runtime.py: no image is pulled from anywhere (see containerd.toml).
server = "http://127.0.0.1:9"
# containerd 1.6 refuses a file without a [host] tree ("invalid `host` tree").
[host."http://127.0.0.1:9"]
  capabilities = ["pull", "resolve"]
"""
REGISTRY_NAMESPACES = ("docker.io", "_default")
"""docker.io: every image of this project; _default: any other registry's name."""


def containerd(state: State) -> Spec:
    d = _dir(state)

    def prepare() -> None:
        for sub in ("containerd/root", "containerd/run", "cni/net.d", "cni/ipam"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        for namespace in REGISTRY_NAMESPACES:
            (d / "registries" / namespace).mkdir(parents=True, exist_ok=True)
            (d / "registries" / namespace / "hosts.toml").write_text(NO_REGISTRY)
        (d / "containerd.toml").write_text(
            CONTAINERD_TOML.format(
                root=d / "containerd/root",
                run=d / "containerd/run",
                sock=socket(state),
                pause=PAUSE_TAG,
                cni_bin=_cni_bin(),
                cni_conf=d / "cni/net.d",
                registries=d / "registries",
            )
        )
        _write_cni(state)

    argv = ["containerd", "--config", str(d / "containerd.toml"), "--log-level", "warn"]

    def healthy() -> bool:
        return ctr(state, "version", check=False).returncode == 0

    return Spec("containerd", argv, healthy, _base_env(state), prepare=prepare, ready_timeout=60)


def _write_cni(state: State) -> None:
    net = NodeNet.of(state)
    conf = {
        "cniVersion": "0.4.0",
        "name": "rewind-dev",
        "plugins": [
            {
                "type": "bridge",
                "bridge": net.bridge,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": net.pod_cidr, "gateway": net.gateway}]],
                    # Only this cluster's test networks: no default route out of a pod.
                    "routes": [{"dst": "198.18.0.0/15"}],
                    "dataDir": str(_dir(state) / "cni" / "ipam"),
                },
            },
            {"type": "loopback"},
        ],
    }
    (_dir(state) / "cni" / "net.d" / "10-rewind-dev.conflist").write_text(json.dumps(conf))


def _has_link(name: str) -> bool:
    r = subprocess.run(["ip", "link", "show", name], check=False, capture_output=True)
    return r.returncode == 0


def ensure_bridge(state: State) -> None:
    """Makes the bridge with the node IP before the kubelet starts (it listens there)."""
    net = NodeNet.of(state)
    if not _has_link(net.bridge):
        subprocess.run(["ip", "link", "add", net.bridge, "type", "bridge"], check=True)
        subprocess.run(["ip", "addr", "add", f"{net.gateway}/24", "dev", net.bridge], check=True)
    subprocess.run(["ip", "link", "set", net.bridge, "up"], check=True)


def ensure_cgroup_root(net: NodeNet) -> None:
    """The kubelet (cgroupfs driver) wants its cgroupRoot in every v1 hierarchy."""
    for hierarchy in sorted(CGROUP_FS.iterdir()):
        if hierarchy.name == "unified" or not (hierarchy / "cgroup.procs").exists():
            continue
        root = hierarchy / net.cgroup_root.lstrip("/")
        root.mkdir(exist_ok=True)
        if hierarchy.name.startswith("cpuset"):
            # A v1 cpuset starts empty; a cgroup with no cpus or mems can hold no process.
            for f in ("cpuset.cpus", "cpuset.mems"):
                (root / f).write_text((hierarchy / f).read_text())


def ctr(state: State, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ctr", "--address", str(socket(state)), "-n", NAMESPACE, *args],
        capture_output=True, text=True, check=check,
    )  # fmt: skip


def import_images(state: State, tars: list[Path]) -> None:
    """Imports each image tar whose content containerd does not hold yet."""
    stamp = _dir(state) / "imported.json"
    done: dict[str, float] = json.loads(stamp.read_text()) if stamp.exists() else {}
    for tar in tars:
        if done.get(str(tar)) == tar.stat().st_mtime:
            continue
        r = ctr(state, "images", "import", "--no-unpack", str(tar), check=False)
        if r.returncode != 0:
            raise RuntimeError(f"ctr images import {tar} failed: {r.stderr.strip()}")
        done[str(tar)] = tar.stat().st_mtime
    stamp.write_text(json.dumps(done))


KUBELET_CONFIG = """\
# Written by dev/node/runtime.py; see dev/README.md for why each setting is there.
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {address}
port: {port}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {healthz}
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {ca}}}
authorization: {{mode: Webhook}}
tlsCertFile: {pki}/kubelet-serving.crt
tlsPrivateKeyFile: {pki}/kubelet-serving.key
containerRuntimeEndpoint: unix://{sock}
# This machine mounts cgroup v1 controllers beside a v2 one (hybrid).
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: {cgroup_root}
cgroupsPerQOS: true
failSwapOn: false
# A shared development machine: never evict pods for the host's own disk or memory.
evictionHard: {{"memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%"}}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
registerNode: true
podCIDR: {pod_cidr}
# Pods ask the node's CoreDNS (dev/node/dns.py), which answers for cluster.local only;
# no host resolv.conf, so a pod with dnsPolicy Default gets no server outside our ranges.
clusterDNS: [{dns}]
clusterDomain: {domain}
resolvConf: ""
"""


def kubelet(state: State, p: dict[str, int]) -> Spec:
    net = NodeNet.of(state)
    d = _dir(state)
    cfg = d / "kubelet.yaml"

    def prepare() -> None:
        ensure_bridge(state)
        ensure_cgroup_root(net)
        (d / "kubelet").mkdir(parents=True, exist_ok=True)
        cfg.write_text(
            KUBELET_CONFIG.format(
                address=net.gateway,
                port=p["kubelet"],
                healthz=p["kubelet-healthz"],
                ca=state.pki / "ca.crt",
                pki=state.pki,
                sock=socket(state),
                cgroup_root=net.cgroup_root,
                pod_cidr=net.pod_cidr,
                dns=net.gateway,
                domain=dns.CLUSTER_DOMAIN,
            )
        )

    argv = [
        str(pins.KUBERNETES_NODE.binary("kubelet")), f"--config={cfg}",
        f"--kubeconfig={state.kubeconfig('kubelet')}", f"--root-dir={d / 'kubelet'}",
        f"--cert-dir={d / 'kubelet' / 'pki'}", f"--hostname-override={NODE_NAME}",
        f"--node-ip={net.gateway}", "--v=1",
    ]  # fmt: skip

    def healthy() -> bool:
        node = api_get(state, p["apiserver"], f"/api/v1/nodes/{NODE_NAME}")
        if not node:
            return False
        conds = node.get("status", {}).get("conditions") or []
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)

    return Spec("kubelet", argv, healthy, _base_env(state), grace=45, prepare=prepare,
                ready_timeout=120)  # fmt: skip


def kube_proxy(state: State, p: dict[str, int]) -> Spec:
    net = NodeNet.of(state)
    argv = [
        str(pins.KUBERNETES_NODE.binary("kube-proxy")),
        f"--kubeconfig={state.kubeconfig('admin')}", f"--hostname-override={NODE_NAME}",
        "--proxy-mode=iptables", f"--cluster-cidr={net.pod_cidr}",
        f"--bind-address={HOST}", f"--healthz-bind-address={HOST}:{p['kube-proxy-healthz']}",
        f"--metrics-bind-address={HOST}:{p['kube-proxy-metrics']}",
        # Leave the host's conntrack sysctls alone (not permitted here, and not ours).
        "--conntrack-max-per-core=0", "--conntrack-tcp-timeout-established=0",
        "--conntrack-tcp-timeout-close-wait=0", f"--nodeport-addresses={net.pod_cidr}",
        "--v=1",
    ]  # fmt: skip
    url = f"http://{HOST}:{p['kube-proxy-healthz']}/healthz"
    return Spec("kube-proxy", argv, lambda: http_get(url) is not None, _base_env(state))


GATEWAY_PORTS = ("minio", "apiserver")
"""The loopback services that pods reach at the node IP through dev/node/gateway.py."""


def gateway(state: State, p: dict[str, int]) -> Spec:
    """The node gateway; healthy once MinIO and the API server answer through it."""
    node = NodeNet.of(state).gateway
    argv = [
        str(REPO / ".venv" / "bin" / "python"), "-m", "dev.node.gateway", f"--listen={node}",
        *[f"--forward={p[name]}" for name in GATEWAY_PORTS],
    ]  # fmt: skip

    def healthy() -> bool:
        minio = http_get(f"http://{node}:{p['minio']}/minio/health/ready") is not None
        api = f"https://{node}:{p['apiserver']}/readyz"
        return minio and http_get(api, admin_ctx(state)) == b"ok"

    return Spec("node-gateway", argv, healthy, _base_env(state), grace=5, cwd=REPO,
                prepare=lambda: ensure_bridge(state))  # fmt: skip


# ---- teardown -------------------------------------------------------------------------


def _mounts_under(prefixes: list[str]) -> list[str]:
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if any(point == p or point.startswith(p.rstrip("/") + "/") for p in prefixes):
            out.append(point)
    return sorted(out, key=len, reverse=True)  # the deepest first


def netns_paths(state: State) -> list[str]:
    """The network namespaces of this cluster's pod sandboxes (from containerd's specs)."""
    r = ctr(state, "containers", "list", "-q", check=False)
    out = []
    for cid in r.stdout.split() if r.returncode == 0 else []:
        info = ctr(state, "containers", "info", cid, check=False)
        if info.returncode:
            continue
        spec = json.loads(info.stdout).get("Spec") or {}
        for ns in (spec.get("linux") or {}).get("namespaces") or []:
            if ns.get("type") == "network" and ns.get("path", "").startswith("/var/run/netns/"):
                out.append(ns["path"])
    return sorted(set(out))


def stop_containers(state: State) -> list[str]:
    """Kills and deletes every container; returns the netns paths they used."""
    nets = netns_paths(state)
    r = ctr(state, "tasks", "list", "-q", check=False)
    for cid in r.stdout.split() if r.returncode == 0 else []:
        ctr(state, "tasks", "kill", "-s", "SIGKILL", cid, check=False)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        r = ctr(state, "tasks", "list", check=False)
        if r.returncode or "RUNNING" not in r.stdout:
            break
        time.sleep(0.3)
    r = ctr(state, "tasks", "list", "-q", check=False)
    for cid in r.stdout.split() if r.returncode == 0 else []:
        ctr(state, "tasks", "delete", "-f", cid, check=False)
    r = ctr(state, "containers", "list", "-q", check=False)
    for cid in r.stdout.split() if r.returncode == 0 else []:
        ctr(state, "containers", "delete", cid, check=False)
    return nets


def _cgroup_dirs(net: NodeNet) -> list[Path]:
    out: list[Path] = []
    for hierarchy in CGROUP_FS.iterdir():
        root = hierarchy / net.cgroup_root.lstrip("/")
        if root.is_dir():
            out += [p for p in root.rglob("*") if p.is_dir()] + [root]
    return sorted(out, key=lambda p: len(p.parts), reverse=True)


def _remove_cgroups(net: NodeNet) -> None:
    for cg in _cgroup_dirs(net):
        procs = cg / "cgroup.procs"
        if procs.exists():
            for pid in procs.read_text().split():
                subprocess.run(["kill", "-9", pid], check=False, capture_output=True)
    for _ in range(50):
        left = []
        for cg in _cgroup_dirs(net):
            try:
                cg.rmdir()
            except OSError:
                left.append(cg)
        if not left:
            return
        time.sleep(0.1)


def teardown_after_containerd(state: State, nets: list[str]) -> None:
    """After containerd, the kubelet and kube-proxy stopped: what they left on the host."""
    net = NodeNet.of(state)
    for path in nets:
        subprocess.run(["umount", path], check=False, capture_output=True)
        Path(path).unlink(missing_ok=True)
    for point in _mounts_under([str(state.root)]):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    _remove_cgroups(net)
    subprocess.run(["ip", "link", "del", net.bridge], check=False, capture_output=True)
    if pins.KUBERNETES_NODE.binary("kube-proxy").exists():
        subprocess.run(
            [str(pins.KUBERNETES_NODE.binary("kube-proxy")), "--cleanup"],
            check=False,
            capture_output=True,
        )
    drop_kube_chains()


def drop_kube_chains() -> None:
    """Removes the KUBE-* chains and the rules jumping to them (kube-proxy's --cleanup
    leaves the kubelet's own: KUBE-FIREWALL, KUBE-KUBELET-CANARY, KUBE-IPTABLES-HINT)."""
    for family in ("iptables", "ip6tables"):
        saved = subprocess.run(
            [f"{family}-save"], check=False, capture_output=True, text=True
        ).stdout
        if "KUBE-" not in saved:
            continue
        kept = "".join(line for line in saved.splitlines(keepends=True) if "KUBE-" not in line)
        subprocess.run([f"{family}-restore"], input=kept, text=True, check=True)


def leftovers(state: State, nets: list[str]) -> list[str]:
    """What this cluster's node still holds on the host (given the netns paths its pods
    had); empty after a clean `down`."""
    net = NodeNet.of(state)
    out = [f"mount {m}" for m in _mounts_under([str(state.root)])]
    out += [f"netns {n}" for n in nets if Path(n).exists()]
    out += [f"cgroup {c}" for c in _cgroup_dirs(net)]
    if _has_link(net.bridge):
        out.append(f"bridge {net.bridge}")
    for family in ("iptables", "ip6tables"):
        saved = subprocess.run(
            [f"{family}-save"], check=False, capture_output=True, text=True
        ).stdout
        out += [f"{family} chain {c[1:]}" for c in saved.split() if c.startswith(":KUBE-")]
    return out
