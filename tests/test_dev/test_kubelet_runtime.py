"""Container processes through the shim (real processes): exit codes, signals, adoption,
volumes written atomically."""

import os
import signal
import sys
import time
from pathlib import Path

from dev.kubelet.runtime import (
    ContainerProcess,
    LaunchSpec,
    Mount,
    namespaces_supported,
    proc_start_time,
)
from dev.kubelet.volumes import write_atomic


def spec(
    tmp_path: Path, argv: list[str], cid: str = "c1", mounts: tuple[Mount, ...] = ()
) -> LaunchSpec:
    return LaunchSpec(
        container_id=cid, argv=argv, env={"PATH": os.environ["PATH"], "GREETING": "hi"},
        cwd=str(tmp_path), log_path=tmp_path / "c.log", run_dir=tmp_path / "run",
        mounts=mounts, hostname="pod-a", isolate=namespaces_supported(),
    )  # fmt: skip


def wait_exit(proc: ContainerProcess) -> int:
    while (status := proc.poll()) is None:
        time.sleep(0.05)
    return status.exit_code


def test_exit_code_env_cwd_and_log(tmp_path: Path) -> None:
    proc = ContainerProcess.spawn(
        spec(tmp_path, ["sh", "-c", "echo $GREETING from $(pwd); exit 7"])
    )
    assert wait_exit(proc) == 7
    assert (tmp_path / "c.log").read_text() == f"hi from {tmp_path}\n"


def test_sigterm_reaches_the_command_and_gives_143(tmp_path: Path) -> None:
    proc = ContainerProcess.spawn(
        spec(
            tmp_path,
            [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(600)"],
        )
    )
    while "up" not in (tmp_path / "c.log").read_text():
        time.sleep(0.05)
    proc.signal(signal.SIGTERM)
    assert wait_exit(proc) == 143


def test_missing_command_is_a_start_error(tmp_path: Path) -> None:
    proc = ContainerProcess.spawn(spec(tmp_path, ["no-such-command-here"]))
    assert wait_exit(proc) == 128
    status = proc.poll()
    assert status is not None and status.reason == "StartError"


def test_an_adopted_process_reports_its_exit_code_from_the_exit_file(tmp_path: Path) -> None:
    first = ContainerProcess.spawn(spec(tmp_path, ["sh", "-c", "sleep 0.5; exit 5"]))
    adopted = ContainerProcess.adopt(first.pid, first.pid_start, first.exit_file)
    assert adopted.poll() is None
    while proc_start_time(first.pid) is not None:  # a zombie counts as ended
        time.sleep(0.05)
    assert wait_exit(adopted) == 5
    assert first._popen is not None and first._popen.wait() == 5  # reaped by its parent


def test_a_recycled_pid_is_not_mistaken_for_the_container(tmp_path: Path) -> None:
    stale = ContainerProcess.adopt(os.getpid(), 1, tmp_path / "none.exit")
    status = stale.poll()
    assert status is not None and status.exit_code == 137


def test_volumes_are_bound_at_their_mount_paths(tmp_path: Path) -> None:
    if not namespaces_supported():
        # Without mount namespaces the kubelet passes REWIND_DEV_VOLUME_<NAME> instead.
        assert not namespaces_supported()
        return
    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "key").write_text("value")
    target = f"/tmp/rewind-test-mount-{os.getpid()}"
    proc = ContainerProcess.spawn(spec(tmp_path, ["sh", "-c", f"cat {target}/key; hostname"],
                                       mounts=(Mount(str(vol), target, True),)))  # fmt: skip
    assert wait_exit(proc) == 0
    assert (tmp_path / "c.log").read_text() == "valuepod-a\n"
    assert not os.listdir(target)  # the mount was private to the container
    os.rmdir(target)


def test_a_volume_over_a_parent_folder_keeps_the_containers_own_folders(tmp_path: Path) -> None:
    """An emptyDir at /tmp must not hide a repository, .venv or pod state that live below it."""
    if not namespaces_supported():
        assert not namespaces_supported()
        return
    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "from-volume").write_text("v")
    (tmp_path / "from-host").write_text("h")
    target = str(tmp_path.parent)  # covers tmp_path: the cwd and the run dir (exit file)
    proc = ContainerProcess.spawn(spec(
        tmp_path, ["sh", "-c", f"cat from-host {target}/from-volume"],
        mounts=(Mount(str(vol), target, False),),
    ))  # fmt: skip
    assert wait_exit(proc) == 0
    assert (tmp_path / "c.log").read_text() == "hv"


def test_atomic_writer_swaps_data_and_removes_stale_keys(tmp_path: Path) -> None:
    target = tmp_path / "cm"
    assert write_atomic(target, {"a": (b"1", 0o644), "dir/b": (b"2", 0o600)})
    assert (target / "a").read_text() == "1" and (target / "dir" / "b").read_text() == "2"
    assert not write_atomic(target, {"a": (b"1", 0o644), "dir/b": (b"2", 0o600)})
    assert write_atomic(target, {"a": (b"3", 0o644)})
    assert (target / "a").read_text() == "3"
    assert not (target / "dir").exists()
    assert (target / "a").is_symlink()
    assert (
        len(
            [
                p
                for p in target.iterdir()
                if p.name.startswith("..") and p.is_dir() and not p.is_symlink()
            ]
        )
        == 1
    )
