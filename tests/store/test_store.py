"""Store rules on both backends: ULIDs, aware UTC timestamps, case-insensitive names."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shellwego.errors import Conflict
from shellwego.models import App, AppStatus, Organization, ProcessFormation, new_id
from shellwego.services.context import Context
from shellwego.store import repository as repo


def _org(ctx: Context, slug: str) -> Organization:
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    with ctx.db.session() as s:
        return repo.add(s, Organization(id=new_id(), name=slug, slug=slug, plan="free",
                                        created_at=now, updated_at=now), conflict="dup")


def test_ids_are_ulids_and_times_come_back_aware_utc(ctx: Context) -> None:
    org = _org(ctx, "acme")
    assert len(org.id) == 26
    with ctx.db.session() as s:
        row = repo.require(s, Organization, "org", id=org.id)
    assert row.created_at == datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert row.created_at.tzinfo is not None


def test_naive_timestamps_are_refused(ctx: Context) -> None:
    with pytest.raises(Exception, match="naive datetime"), ctx.db.session() as s:
        repo.add(s, Organization(id=new_id(), name="n", slug="naive", plan="free",
                                 created_at=datetime(2026, 1, 1), updated_at=datetime(2026, 1, 1)),
                 conflict="dup")


def test_names_are_unique_case_insensitively_and_found_either_way(ctx: Context) -> None:
    org = _org(ctx, "acme")
    now = datetime.now(UTC)

    def app(name: str) -> App:
        return App(id=new_id(), organization_id=org.id, name=name, status=AppStatus.CREATED,
                   formation={"web": ProcessFormation(count=2)}, created_at=now, updated_at=now)

    with ctx.db.session() as s:
        repo.add(s, app("Blog"), conflict="dup")
    with pytest.raises(Conflict), ctx.db.session() as s:
        repo.add(s, app("bLOG"), conflict="dup")
    with ctx.db.session() as s:
        found = repo.get(s, App, organization_id=org.id, name="BLOG")
        assert found is not None and found.name == "Blog"
        assert found.formation["web"].count == 2  # value objects come back typed
        assert found.status is AppStatus.CREATED
    with pytest.raises(Conflict):
        _org(ctx, "ACME")
