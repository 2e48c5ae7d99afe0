"""Pure kubelet decisions: pod addresses, probe thresholds, pod phase and conditions."""

from typing import Any

import pytest

from dev.kubelet.ipam import PodIPAllocator, is_pod_address
from dev.kubelet.podstatus import ContainerView, Terminated, pod_phase, pod_status
from dev.kubelet.probes import ProbeTiming, ProbeTracker, resolve_port


def test_addresses_are_unique_loopback_and_deterministic() -> None:
    a, b = PodIPAllocator(), PodIPAllocator()
    ips = [a.allocate(f"uid-{i}") for i in range(300)]
    assert len(set(ips)) == 300
    assert all(is_pod_address(ip) and not ip.startswith("127.0.0.") for ip in ips)
    assert [b.allocate(f"uid-{i}") for i in range(300)] == ips
    assert a.allocate("uid-7") == ips[7]


def test_a_released_address_can_be_reused_and_a_reserved_one_is_not_given() -> None:
    a = PodIPAllocator()
    ip = a.allocate("x")
    a.release("x")
    b = PodIPAllocator({"other": ip})
    assert b.allocate("x") != ip
    with pytest.raises(ValueError):
        b.reserve("third", ip)


def test_readiness_needs_success_threshold_and_flips_after_failure_threshold() -> None:
    t = ProbeTracker("readiness", ProbeTiming(success_threshold=2, failure_threshold=3))
    assert t.verdict is False
    assert not t.record(True) and t.verdict is False
    assert t.record(True) and t.verdict is True
    assert not t.record(False) and not t.record(False)
    assert t.verdict is True
    assert t.record(False) and t.verdict is False
    assert not t.failed  # readiness never kills


def test_liveness_starts_alive_and_fails_after_consecutive_failures() -> None:
    t = ProbeTracker("liveness", ProbeTiming(failure_threshold=2))
    assert t.verdict is True and not t.failed
    t.record(False)
    t.record(True)  # a success in between resets the count
    t.record(False)
    assert not t.failed
    t.record(False)
    assert t.failed


def test_startup_probe_gives_up_after_the_threshold() -> None:
    t = ProbeTracker("startup", ProbeTiming(failure_threshold=2))
    t.record(False)
    assert not t.failed
    t.record(False)
    assert t.failed and t.decided
    ok = ProbeTracker("startup", ProbeTiming(failure_threshold=2))
    ok.record(True)
    assert ok.verdict and ok.decided and not ok.failed


def test_named_ports() -> None:
    c = {"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}
    assert resolve_port("http", c) == 8080
    assert resolve_port(81, c) == 81
    assert resolve_port("82", c) == 82
    with pytest.raises(ValueError):
        resolve_port("grpc", c)


def view(state: str, code: int | None = None, last: int | None = None, **kw: Any) -> ContainerView:
    term = Terminated(code, "x", None, "2026-01-01T00:00:00Z") if code is not None else None
    prev = Terminated(last, "x", None, "2026-01-01T00:00:00Z") if last is not None else None
    return ContainerView(name="c", image="i", image_id="", state=state,  # type: ignore[arg-type]
                         terminated=term, last_terminated=prev, **kw)  # fmt: skip


@pytest.mark.parametrize(
    ("policy", "views", "phase"),
    [
        ("Always", [view("waiting")], "Pending"),
        ("Always", [view("running"), view("waiting")], "Pending"),
        ("Always", [view("running")], "Running"),
        ("Always", [view("waiting", last=1, will_restart=True)], "Running"),
        ("Never", [view("terminated", code=0)], "Succeeded"),
        ("Never", [view("terminated", code=0), view("terminated", code=2)], "Failed"),
        ("OnFailure", [view("terminated", code=0)], "Succeeded"),
        ("OnFailure", [view("waiting", last=1, will_restart=True)], "Running"),
        ("Never", [view("running"), view("terminated", code=0)], "Running"),
    ],
)
def test_phase(policy: str, views: list[ContainerView], phase: str) -> None:
    assert pod_phase("Pending", policy, True, False, views) == phase


def test_terminal_phase_is_never_left_and_init_gates_pending() -> None:
    assert pod_phase("Succeeded", "Always", True, False, [view("running")]) == "Succeeded"
    assert pod_phase("Pending", "Always", False, False, [view("running")]) == "Pending"
    assert pod_phase("Pending", "Never", False, True, [view("waiting")]) == "Failed"


def base_pod(conditions: list[dict[str, Any]]) -> dict[str, Any]:
    return {"metadata": {"name": "p"}, "spec": {"restartPolicy": "Always"},
            "status": {"phase": "Pending", "conditions": conditions}}  # fmt: skip


def test_status_conditions_and_container_states() -> None:
    scheduled = {"type": "PodScheduled", "status": "True", "lastTransitionTime": "t0"}
    ready_before = {"type": "Ready", "status": "True", "lastTransitionTime": "t1"}
    pod = base_pod([scheduled, ready_before])
    status = pod_status(pod, [], [view("running", ready=True, started=True)],
                        "127.0.1.2", "127.0.0.1", "t")  # fmt: skip
    by_type = {c["type"]: c for c in status["conditions"]}
    assert "PodScheduled" not in by_type  # the scheduler's condition is left alone (merge patch)
    assert by_type["Ready"]["status"] == "True"
    assert by_type["Ready"]["lastTransitionTime"] == "t1"  # unchanged status keeps its time
    assert status["phase"] == "Running"
    assert status["podIP"] == "127.0.1.2"
    state = status["containerStatuses"][0]["state"]
    assert state["running"] is not None and state["waiting"] is None and state["terminated"] is None


def test_unready_container_names_itself_and_deleted_pod_gets_terminal_phase() -> None:
    status = pod_status(base_pod([]), [], [view("running")], "127.0.1.2", "127.0.0.1", "t")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False"
    assert ready["message"] == "containers with unready status: [c]"
    done = pod_status(base_pod([]), [], [view("terminated", code=143)], "ip", "h", "t",
                      terminal="Failed")  # fmt: skip
    assert done["phase"] == "Failed"
    assert done["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 143
