"""The pre-receive hook refuses a push whose branch moved since the pusher fetched."""

from __future__ import annotations

import io

from shellwego.build.hook import run

OLD, NEW, OTHER = "1" * 40, "2" * 40, "3" * 40
ENV = {"SHELLWEGO_API_URL": "http://127.0.0.1:9", "SHELLWEGO_APP": "a", "SHELLWEGO_TOKEN": "t"}


def test_a_push_on_a_moved_branch_is_refused_before_any_build() -> None:
    out = io.StringIO()
    status = run(io.StringIO(f"{OLD} {NEW} refs/heads/main\n"), out, ENV, lambda ref: OTHER)
    assert status == 1
    assert "main moved while this push was on its way" in out.getvalue()
    # a new branch where one appeared meanwhile: refused too
    out = io.StringIO()
    zero = "0" * 40
    assert run(io.StringIO(f"{zero} {NEW} refs/heads/main\n"), out, ENV, lambda ref: OTHER) == 1
    # another branch is never checked nor deployed
    out = io.StringIO()
    assert run(io.StringIO(f"{OLD} {NEW} refs/heads/feature\n"), out, ENV, lambda r: OTHER) == 0
