"""plan_actions: the pure diff of desired against observed."""

from __future__ import annotations

import pytest

from shellwego.agent.reconcile import Assignment, parse_assignments, plan_actions
from shellwego.errors import InvalidInput
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
    a = Assignment.parse(
        assignment_dict("x", health_check={"type": "http", "path": "/up", "timeout_seconds": 5})
    )
    assert a.health_check.type == "http"
    assert a.health_check.path == "/up"
    assert a.health_check.timeout_seconds == 5.0
    assert a.env == {"SECRET_KEY": "hunter2-do-not-print"}
    assert "hunter2" not in repr(a)
    spec = a.spec(__import__("pathlib").Path("/srv/app"), "fake")
    assert spec.port == 20001 and spec.runtime == "fake" and spec.env["SECRET_KEY"]


@pytest.mark.parametrize(
    "bad",
    [
        {"port": "20001"},
        {"env": {"A": 1}},
        {"desired_state": "paused"},
        {"health_check": {"type": "grpc"}},
        {"health_check": {"type": "http", "path": "no-slash"}},
        {"instance_id": None},
    ],
)
def test_assignment_parse_rejects_malformed_items(bad: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        Assignment.parse(assignment_dict("x", **bad))


def test_parse_assignments_skips_bad_items_and_says_why() -> None:
    good, errors = parse_assignments([assignment_dict("a"), assignment_dict("b", port="x")])
    assert [a.instance_id for a in good] == ["a"]
    assert len(errors) == 1 and "'b'" in errors[0] and "port" in errors[0]
    assert "hunter2" not in errors[0]
