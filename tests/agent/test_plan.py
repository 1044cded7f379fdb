"""plan_actions: the pure diff of desired against observed."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shellwego.agent.client import parse_assignments
from shellwego.agent.reconcile import instance_spec, plan_actions
from shellwego.models.agentprotocol import Assignment, ImageArtifact, SlugArtifact
from shellwego.runtime.driver import InstanceState as S
from shellwego.runtime.driver import InstanceStatus

from .helpers import assignment, assignment_dict


def obs(iid: str, state: S) -> InstanceStatus:
    return InstanceStatus(instance_id=iid, state=state)


CASES: list[tuple[str, list[Assignment], list[InstanceStatus], list[tuple[str, str]]]] = [
    ("nothing", [], [], []),
    ("start new", [assignment("a"), assignment("b")], [], [("start", "a"), ("start", "b")]),
    ("already running", [assignment("a")], [obs("a", S.RUNNING)], []),
    ("starting is left alone", [assignment("a")], [obs("a", S.STARTING)], []),
    ("backoff is the driver's restart", [assignment("a")], [obs("a", S.BACKOFF)], []),
    ("prepared but not started", [assignment("a")], [obs("a", S.PENDING)], [("start", "a")]),
    ("stopped but desired", [assignment("a")], [obs("a", S.STOPPED)], [("start", "a")]),
    ("driver gave up: start again", [assignment("a")], [obs("a", S.EXITED)], [("start", "a")]),
    ("unknown to the driver", [assignment("a")], [obs("a", S.UNKNOWN)], [("start", "a")]),
    (
        "removed while running",
        [],
        [obs("a", S.RUNNING)],
        [("stop", "a"), ("remove", "a")],
    ),
    ("removed while restarting", [], [obs("a", S.BACKOFF)], [("stop", "a"), ("remove", "a")]),
    ("removed and stopped", [], [obs("a", S.STOPPED)], [("remove", "a")]),
    ("removed and exited", [], [obs("a", S.EXITED)], [("remove", "a")]),
    ("removed and only prepared", [], [obs("a", S.PENDING)], [("remove", "a")]),
    ("unknown and not desired", [], [obs("a", S.UNKNOWN)], []),
    (
        "desired stopped while running",
        [assignment("a", desired_state="stopped")],
        [obs("a", S.RUNNING)],
        [("stop", "a")],
    ),
    (
        "desired stopped and stopped: kept",
        [assignment("a", desired_state="stopped")],
        [obs("a", S.STOPPED)],
        [],
    ),
    ("desired stopped, never ran", [assignment("a", desired_state="stopped")], [], []),
    (
        "rolling deploy: stops first, then removes, then starts",
        [assignment("new1"), assignment("new2"), assignment("keep")],
        [obs("old1", S.RUNNING), obs("keep", S.RUNNING), obs("old0", S.EXITED)],
        [
            ("stop", "old1"),
            ("remove", "old0"),
            ("remove", "old1"),
            ("start", "new1"),
            ("start", "new2"),
        ],
    ),
]


@pytest.mark.parametrize(
    ("desired", "observed", "expected"),
    [pytest.param(d, o, e, id=name) for name, d, o, e in CASES],
)
def test_plan_actions(
    desired: list[Assignment], observed: list[InstanceStatus], expected: list[tuple[str, str]]
) -> None:
    plan = plan_actions(desired, observed)
    assert [(a.kind, a.instance_id) for a in plan] == expected
    for action in plan:
        if action.kind == "start":
            assert action.assignment is not None
            assert action.assignment.instance_id == action.instance_id


def test_plan_of_the_planned_state_is_empty() -> None:
    desired = [assignment("a"), assignment("b")]
    observed = [obs("a", S.RUNNING), obs("b", S.RUNNING)]
    assert plan_actions(desired, observed) == []


def test_assignment_parse_reads_the_protocol_and_hides_env() -> None:
    a = Assignment.model_validate(
        assignment_dict("x", health_check={"type": "http", "path": "/up", "timeout_seconds": 5})
    )
    assert a.health_check.type == "http"
    assert a.health_check.path == "/up"
    assert a.health_check.timeout_seconds == 5.0
    assert a.env == {"SECRET_KEY": "hunter2-do-not-print"}
    assert "hunter2" not in repr(a)
    spec = instance_spec(a)
    assert spec.port == 20001 and spec.runtime == "process" and spec.env["SECRET_KEY"]
    assert spec.artifact == SlugArtifact(digest="a" * 64) and spec.app_dir is None
    assert spec.memory_bytes == 256 * 1024 * 1024 and spec.cpu_millis == 250


def test_the_flat_shape_of_older_servers_reads_as_the_typed_one() -> None:
    flat = Assignment.model_validate(assignment_dict("x"))
    typed = Assignment.model_validate(
        {
            **{k: v for k, v in assignment_dict("x").items() if k not in FLAT},
            "runtime": "process",
            "artifact": {"kind": "slug", "digest": "a" * 64},
            "resources": {"memory_bytes": 256 * 1024 * 1024, "cpu_millis": 250},
            "network": {"port": 20001},
        }
    )
    assert flat == typed
    assert Assignment.model_validate(typed.model_dump(mode="json")) == typed
    assert (typed.port, typed.slug_digest, typed.mounts) == (20001, "a" * 64, [])


def test_an_image_assignment_carries_its_reference_and_digest() -> None:
    raw = assignment_dict("x", runtime="oci", argv=["/bin/server", "--port", "8080"])
    raw["artifact"] = {"kind": "image", "reference": "nginx:1.27", "digest": "sha256:" + "b" * 64}
    a = Assignment.model_validate(raw)
    assert a.artifact == ImageArtifact(reference="nginx:1.27", digest="sha256:" + "b" * 64)
    assert a.slug_digest is None and a.runtime == "oci"
    assert instance_spec(a).argv == ["/bin/server", "--port", "8080"]


FLAT = ("slug_digest", "port", "memory_bytes", "cpu_millis")


@pytest.mark.parametrize(
    "bad",
    [
        {"port": "20001"},
        {"env": {"A": 1}},
        {"desired_state": "paused"},
        {"health_check": {"type": "grpc"}},
        {"health_check": {"type": "http", "path": "no-slash"}},
        {"instance_id": None},
        {"runtime": "jail"},
        {"artifact": {"kind": "slug", "digest": "not-hex"}},
        {"artifact": {"kind": "tarball"}},
        {"mounts": [{"source": "vol", "target": "relative"}]},
    ],
)
def test_assignment_parse_rejects_malformed_items(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Assignment.model_validate(assignment_dict("x", **bad))


def test_parse_assignments_skips_bad_items_and_says_why() -> None:
    good, errors = parse_assignments([assignment_dict("a"), assignment_dict("b", port="x")])
    assert [a.instance_id for a in good] == ["a"]
    assert len(errors) == 1 and "'b'" in errors[0] and "port" in errors[0]
    assert "hunter2" not in errors[0]
