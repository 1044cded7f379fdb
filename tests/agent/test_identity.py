"""node.json: written atomically, owner-only, read back identically; damage is reported."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from shellwego.agent import identity as identities
from shellwego.agent.identity import Identity
from shellwego.errors import ConfigError


def test_round_trip_and_mode(tmp_path: Path) -> None:
    state = tmp_path / "agent"
    assert identities.load(state) is None
    ident = Identity(node_id="01NODE", node_token="swgn_secret", server_url="http://cp:8000")
    path = identities.save(state, ident)
    assert path == state / "node.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert identities.load(state) == ident
    assert "swgn_secret" not in repr(ident)
    # a second save replaces the file atomically, leaving no temp files
    identities.save(state, Identity("01NODE", "swgn_other", "http://cp:8000"))
    assert [p.name for p in state.iterdir()] == ["node.json"]
    loaded = identities.load(state)
    assert loaded is not None and loaded.node_token == "swgn_other"


@pytest.mark.parametrize(
    "content",
    ["{not json", '{"node_id": "x"}', '{"node_id": "", "node_token": "", "server_url": ""}'],
)
def test_damaged_identity_is_a_clear_error(tmp_path: Path, content: str) -> None:
    (tmp_path / "node.json").write_text(content)
    with pytest.raises(ConfigError, match="join again"):
        identities.load(tmp_path)
