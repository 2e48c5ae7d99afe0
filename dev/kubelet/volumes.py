"""Pod volumes as folders under the pod's state folder.

Flows through: the pod's ``spec.volumes``, the objects they refer to (ConfigMaps and
Secrets through an ``ObjectReader``, service-account tokens through a ``TokenSource``),
and the pod's downward-API context. Out comes ``volume name -> host folder``, which the
shim binds onto each ``mountPath``.

Supported: emptyDir, configMap, secret, downwardAPI, projected (serviceAccountToken,
configMap, secret, downwardAPI), hostPath, and persistentVolumeClaim (a folder per claim
that outlives the pod).

What must stay true:

- an emptyDir is created once and never wiped while the pod lives;
- file-backed volumes are (re)written like the kubelet's AtomicWriter: a new
  ``..<stamp>`` folder, then the ``..data`` symlink swapped in one rename, with
  top-level symlinks into ``..data``; so a reader never sees half an update, and an
  update reaches a running container through the same bind mount;
- a missing non-optional ConfigMap/Secret raises ``VolumeError`` (the pod waits in
  ContainerCreating and is retried), never writes an empty volume.
"""

from __future__ import annotations

import base64
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dev.kubelet.envbuild import ConfigError, ObjectReader, PodContext, pod_field, resource_field

JsonDict = dict[str, Any]
# (audience or None, expirationSeconds) -> a token for the pod's service account
TokenSource = Callable[[str | None, int], str]
Payload = dict[str, tuple[bytes, int]]


class VolumeError(Exception):
    """A volume cannot be set up yet; the pod stays in ContainerCreating."""


def _mode(value: Any, default: int) -> int:
    return int(value) if value is not None else default


def _keyed(
    data: dict[str, bytes] | None,
    ref: JsonDict,
    what: str,
    default_mode: int,
) -> Payload:
    """Files of a configMap/secret source: all keys, or the listed ``items``."""
    if data is None:
        if ref.get("optional"):
            return {}
        raise VolumeError(f"{what} not found")
    items = ref.get("items")
    if not items:
        return {key: (value, default_mode) for key, value in data.items()}
    out: Payload = {}
    for item in items:
        if item["key"] not in data:
            if ref.get("optional"):
                continue
            raise VolumeError(f"{what} has no key {item['key']!r}")
        out[item["path"]] = (data[item["key"]], _mode(item.get("mode"), default_mode))
    return out


def _downward(pod: JsonDict, items: list[JsonDict], ctx: PodContext, default_mode: int) -> Payload:
    out: Payload = {}
    for item in items:
        try:
            if "fieldRef" in item:
                value = pod_field(pod, item["fieldRef"]["fieldPath"], ctx)
            else:
                first = pod["spec"]["containers"][0]["name"]
                value = resource_field(pod, item["resourceFieldRef"], first, ctx)
        except ConfigError as exc:
            raise VolumeError(str(exc)) from exc
        out[item["path"]] = (value.encode(), _mode(item.get("mode"), default_mode))
    return out


def _config_map_bytes(reader: ObjectReader, namespace: str, name: str) -> dict[str, bytes] | None:
    data = reader.config_map(namespace, name)
    return None if data is None else {k: v.encode() for k, v in data.items()}


def payload(
    pod: JsonDict,
    volume: JsonDict,
    reader: ObjectReader,
    tokens: TokenSource,
    ctx: PodContext,
) -> Payload:
    """The files of a file-backed volume (configMap, secret, downwardAPI, projected)."""
    ns = pod["metadata"]["namespace"]
    if "configMap" in volume:
        src = volume["configMap"]
        mode = _mode(src.get("defaultMode"), 0o644)
        data = _config_map_bytes(reader, ns, src["name"])
        return _keyed(data, src, f'configmap "{src["name"]}"', mode)
    if "secret" in volume:
        src = volume["secret"]
        mode = _mode(src.get("defaultMode"), 0o644)
        return _keyed(
            reader.secret(ns, src["secretName"]), src, f'secret "{src["secretName"]}"', mode
        )
    if "downwardAPI" in volume:
        src = volume["downwardAPI"]
        return _downward(pod, src.get("items") or [], ctx, _mode(src.get("defaultMode"), 0o644))
    if "projected" in volume:
        src = volume["projected"]
        mode = _mode(src.get("defaultMode"), 0o644)
        out: Payload = {}
        for source in src.get("sources") or []:
            if "serviceAccountToken" in source:
                tok = source["serviceAccountToken"]
                token = tokens(tok.get("audience") or None, int(tok.get("expirationSeconds", 3600)))
                out[tok["path"]] = (token.encode(), 0o600 if mode == 0o644 else mode)
            elif "configMap" in source:
                ref = source["configMap"]
                data = _config_map_bytes(reader, ns, ref["name"])
                out.update(_keyed(data, ref, f'configmap "{ref["name"]}"', mode))
            elif "secret" in source:
                ref = source["secret"]
                out.update(
                    _keyed(reader.secret(ns, ref["name"]), ref, f'secret "{ref["name"]}"', mode)
                )
            elif "downwardAPI" in source:
                out.update(_downward(pod, source["downwardAPI"].get("items") or [], ctx, mode))
            else:
                raise VolumeError(f"unsupported projected source {sorted(source)}")
        return out
    raise VolumeError(f"volume {volume.get('name')!r} is not file-backed")


def _current(target: Path) -> Payload | None:
    data = target / "..data"
    if not data.is_dir():
        return None
    out: Payload = {}
    for path in data.rglob("*"):
        if path.is_file():
            out[str(path.relative_to(data))] = (path.read_bytes(), path.stat().st_mode & 0o777)
    return out


def write_atomic(target: Path, files: Payload) -> bool:
    """Publish ``files`` (relative path -> (content, mode)) in ``target``; True if changed."""
    target.mkdir(parents=True, exist_ok=True)
    if _current(target) == files:
        return False
    stamp = target / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.monotonic_ns()}"
    stamp.mkdir()
    for rel, (content, mode) in files.items():
        path = stamp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(mode)
    tmp_link = target / "..data_tmp"
    tmp_link.unlink(missing_ok=True)
    tmp_link.symlink_to(stamp.name)
    os.replace(tmp_link, target / "..data")
    tops = {rel.split("/", 1)[0] for rel in files}
    for top in tops:
        link = target / top
        if not link.is_symlink():
            link.symlink_to(f"..data/{top}")
    for entry in target.iterdir():
        if entry.name.startswith(".."):
            if (
                entry.name not in ("..data", stamp.name)
                and entry.is_dir()
                and not entry.is_symlink()
            ):
                shutil.rmtree(entry, ignore_errors=True)
        elif entry.is_symlink() and entry.name not in tops:
            entry.unlink()
    return True


def setup_volumes(
    pod: JsonDict,
    pod_dir: Path,
    state_dir: Path,
    reader: ObjectReader,
    tokens: TokenSource,
    ctx: PodContext,
) -> dict[str, Path]:
    """Create or refresh every volume of the pod; returns name -> host folder."""
    ns = pod["metadata"]["namespace"]
    folders: dict[str, Path] = {}
    for volume in pod["spec"].get("volumes") or []:
        name = volume["name"]
        folder = pod_dir / "volumes" / name
        if "emptyDir" in volume:
            folder.mkdir(parents=True, exist_ok=True)
        elif "hostPath" in volume:
            folder = Path(volume["hostPath"]["path"])
            if volume["hostPath"].get("type") in ("DirectoryOrCreate",):
                folder.mkdir(parents=True, exist_ok=True)
        elif "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            folder = state_dir / "claims" / ns / claim
            folder.mkdir(parents=True, exist_ok=True)
        elif any(k in volume for k in ("configMap", "secret", "downwardAPI", "projected")):
            write_atomic(folder, payload(pod, volume, reader, tokens, ctx))
        else:
            kinds = sorted(k for k in volume if k != "name")
            raise VolumeError(
                f"volume {name!r}: type {kinds} is not supported by the process kubelet"
            )
        folders[name] = folder
    return folders


def decode_secret(data: dict[str, str] | None) -> dict[str, bytes]:
    """A Secret's ``data`` (base64 strings) as bytes."""
    return {k: base64.b64decode(v) for k, v in (data or {}).items()}
