"""The nftables rules of a node network: one ``inet`` table of its own.

The table only ever concerns its own bridge. Its base chains have policy ``accept`` and
drop or reject just what enters or leaves that bridge, so the tables of other platforms,
of other software and the host's own firewall stay untouched and keep working (in
nftables a packet must pass every base chain of its hook; a drop anywhere is final).

What each rule stops is said in its comment, and in ``docs/security.md`` ("Instance
networks"). Loading replaces the whole table in one transaction.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from .names import BRIDGE_PREFIX, NetNames
from .tools import nft_has_table, run_nft

FAMILY = "inet"


def ruleset(
    names: NetNames,
    subnet: IPv4Network,
    gateway: IPv4Address,
    pool: IPv4Network,
    *,
    dns_on_gateway: bool,
) -> str:
    """The table's definition (``nft -f`` syntax)."""
    br = f'iifname "{names.bridge}"'
    to_br = f'oifname "{names.bridge}"'
    to_dns = f"ip daddr {gateway} meta l4proto {{ tcp, udp }} th dport 53"
    dns = (
        [
            f'{br} {to_dns} accept comment "DNS forwarder on the gateway"',
            f'iifname != {{ "{names.bridge}", "lo" }} {to_dns} drop '
            f'comment "the forwarder serves instances and the host only"',
        ]
        if dns_on_gateway
        else []
    )
    input_rules = [
        f'{br} ip saddr != {subnet} drop comment "spoofed source"',
        f'{br} ct state established,related accept comment "answers to the host"',
        *dns,
        *_refuse(br, "no host service"),
    ]
    forward_rules = [
        f'{br} ip saddr != {subnet} drop comment "spoofed source"',
        f'{br} meta nfproto != ipv4 drop comment "IPv4 only"',
        *_refuse(f'{br} oifname "{BRIDGE_PREFIX}*"', "no instance, here or elsewhere"),
        *_refuse(f"{br} ip daddr {pool}", "no instance of the pool"),
        f'{to_br} ct state established,related accept comment "answers from outside"',
        *_refuse(f'{to_br} iifname "{BRIDGE_PREFIX}*"', "no instance of another bridge"),
        f'{to_br} drop comment "nothing routed in: only the host connects to instances"',
    ]
    nat_rules = [
        f'oifname != "{names.bridge}" ip saddr {subnet} masquerade comment "egress NAT"',
    ]
    return "\n".join(
        [
            f"table {FAMILY} {names.table} {{",
            *_chain("input", "filter", "filter", input_rules),
            *_chain("forward", "filter", "filter", forward_rules),
            *_chain("postrouting", "nat", "srcnat", nat_rules),
            "}",
            "",
        ]
    )


def _refuse(match: str, why: str) -> list[str]:
    """Reject what ``match``es at once (a TCP reset, else ICMP "administratively
    prohibited"): the instance's connect fails instead of hanging."""
    return [
        f'{match} meta l4proto tcp reject with tcp reset comment "{why}"',
        f'{match} reject with icmpx admin-prohibited comment "{why}"',
    ]


def _chain(hook: str, kind: str, priority: str, rules: list[str]) -> list[str]:
    """A base chain named after its hook, policy accept."""
    head = f"type {kind} hook {hook} priority {priority}; policy accept;"
    return [f"\tchain {hook} {{", f"\t\t{head}", *(f"\t\t{rule}" for rule in rules), "\t}"]


def install(names: NetNames, script: str) -> None:
    """Load (or replace) the table atomically."""
    table = f"{FAMILY} {names.table}"
    run_nft(f"add table {table}\ndelete table {table}\n{script}", what="loading nftables rules")


def remove(names: NetNames) -> None:
    if nft_has_table(FAMILY, names.table):
        run_nft(f"delete table {FAMILY} {names.table}\n", what="removing nftables rules")


def present(names: NetNames) -> bool:
    return nft_has_table(FAMILY, names.table)
