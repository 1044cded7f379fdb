"""``nodes list|info|drain``: the machines that run instances (operators)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer

from shellwego.cli.context import JsonOption, client, wants_json
from shellwego.cli.output import emit_json, line, pairs, size, table, when


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Worker nodes.", no_args_is_help=True)
    group.command("list")(list_nodes)
    group.command("info")(info)
    group.command("drain")(drain)
    app.add_typer(group, name="nodes")


def _path(node: str) -> str:
    return f"/v1/nodes/{quote(node, safe='')}"


def _capacity(node: dict[str, Any]) -> str:
    cap = node.get("capacity") or {}
    cpu = cap.get("cpu_millis", 0) / 1000
    return f"{cpu:g} CPU, {size(int(cap.get('memory_bytes', 0)))}"


def list_nodes(json_: JsonOption = False) -> None:
    """Every node with its status and last heartbeat."""
    found = client().items("/v1/nodes")
    if wants_json(json_):
        emit_json(found)
        return
    if not found:
        line("No nodes have joined yet. Start one with: shellwego agent (or shellwego up)")
        return
    table(
        ["ID", "HOSTNAME", "STATUS", "REGION", "RUNTIMES", "CAPACITY", "HEARTBEAT"],
        [
            [
                n["id"],
                n["hostname"],
                n["status"],
                f"{n['region']}/{n['zone']}",
                ",".join(n.get("runtimes") or []),
                _capacity(n),
                when(n.get("last_heartbeat_at")),
            ]
            for n in found
        ],
    )


def _reasons(node: dict[str, Any]) -> list[tuple[str, str]]:
    """One ``Not <runtime>`` line per runtime the node does not offer, with the reason."""
    reasons = node.get("runtime_reasons") or {}
    return [(f"Not {runtime}", str(why)) for runtime, why in sorted(reasons.items())]


def _show(node: dict[str, Any]) -> None:
    labels = ", ".join(f"{k}={v}" for k, v in sorted((node.get("labels") or {}).items()))
    pairs(
        node["hostname"],
        [
            ("ID", node["id"]),
            ("Status", node["status"]),
            ("Region", f"{node['region']}/{node['zone']}"),
            ("Address", node.get("address")),
            ("Runtimes", ",".join(node.get("runtimes") or [])),
            *_reasons(node),
            ("Capacity", _capacity(node)),
            ("Labels", labels),
            ("Agent", node.get("agent_version")),
            ("Heartbeat", when(node.get("last_heartbeat_at"))),
        ],
    )


def info(
    node: Annotated[str, typer.Argument(metavar="ID")],
    json_: JsonOption = False,
) -> None:
    """One node in detail."""
    found = client().get(_path(node))
    if wants_json(json_):
        emit_json(found)
        return
    _show(found)


def drain(
    node: Annotated[str, typer.Argument(metavar="ID")],
    json_: JsonOption = False,
) -> None:
    """Stop placing instances on the node and move its instances elsewhere."""
    found = client().post(f"{_path(node)}/actions/drain")
    if wants_json(json_):
        emit_json(found)
        return
    line(f"Draining {found['hostname']} ({found['id']}): its instances move to other nodes.")
