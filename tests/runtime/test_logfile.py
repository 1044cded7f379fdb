"""Reading back the lines of an instance's log file."""

from __future__ import annotations

from datetime import UTC, datetime

from shellwego.runtime.logfile import parse_line


def test_a_stamped_line_keeps_its_time_stream_and_text() -> None:
    line = parse_line("i-1", b"2026-11-25T03:00:00.512345Z stderr oops: a b  c")
    assert line.instance_id == "i-1"
    assert line.stream == "stderr"
    assert line.timestamp == datetime(2026, 11, 25, 3, 0, 0, 512345, tzinfo=UTC)
    assert line.line == "oops: a b  c"


def test_an_empty_stamped_line_and_bad_bytes() -> None:
    assert parse_line("i-1", b"2026-11-25T03:00:00.000001Z stdout").line == ""
    assert parse_line("i-1", b"2026-11-25T03:00:00.000001Z stdout \xff").line == "\ufffd"


def test_anything_else_is_a_stdout_line_stamped_now() -> None:
    before = datetime.now(UTC)
    for raw in (b"plain text", b"not-a-time stdout x", b"2026-11-25T03:00:00Z stdin x"):
        line = parse_line("i-1", raw)
        assert (line.stream, line.line) == ("stdout", raw.decode())
        assert before <= line.timestamp <= datetime.now(UTC)
