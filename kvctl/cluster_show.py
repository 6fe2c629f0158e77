"""How ``kvctl cluster`` shows status to a person: aligned fields and tables.

Every function takes the interface's JSON (what ``--json`` prints) and returns text, so the
readable and the JSON output can never disagree on a fact.
"""
from __future__ import annotations

from typing import Any

from kvctl.output import table


def fields(pairs: list[tuple[str, Any]]) -> str:
    width = max(len(name) for name, _ in pairs) + 2
    return "\n".join(f"{(name + ':').ljust(width)}{value}" for name, value in pairs)


def size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit} ({n} bytes)"
    return f"{n} bytes"


def contact(member: dict[str, Any]) -> str:
    if member["is_leader"]:
        return "-"
    seconds = member["last_contact"]
    return "never" if seconds is None else f"{seconds:.1f}s ago"


def yes(flag: bool) -> str:
    return "yes" if flag else "no"


def members_table(members: list[dict[str, Any]]) -> str:
    rows = [["ID", "TYPE", "LEADER", "PEER ADDRESS", "CLIENT ADDRESS", "HEALTHY", "MATCH", "LAG", "CAUGHT UP",
             "LAST CONTACT", "VERSION"]]
    for m in members:
        # a leader running 0.1.0 does not report versions at all
        rows.append([m["id"], m["type"], "*" if m["is_leader"] else "", m["peer_address"] or "-",
                     m["client_address"] or "-", yes(m["healthy"]), str(m["match_index"]), str(m["lag"]),
                     yes(m["caught_up"]), contact(m), m.get("version") or "-"])
    return table(rows)


def info(doc: dict[str, Any]) -> str:
    voters, learners = doc["voters"], doc["learners"]
    pairs = [
        ("Cluster ID", doc["cluster_id"] or "-"),
        ("Leader", f"{doc['leader']} (term {doc['term']})"),
        ("Commit index", doc["commit_index"]),
        ("Voters", f"{len(voters)} ({', '.join(voters)})"),
        ("Learners", f"{len(learners)}" + (f" ({', '.join(learners)})" if learners else "")),
        ("Quorum", f"{doc['quorum']} of {len(voters)} voters"),
    ]
    if doc.get("change_in_progress"):
        pairs.append(("In progress", doc["change_in_progress"]))
    return fields(pairs) + "\n\n" + members_table(doc["members"])


def member(m: dict[str, Any], doc: dict[str, Any]) -> str:
    head = fields([
        ("Member", m["id"]),
        ("Type", m["type"]),
        ("Leader", yes(m["is_leader"]) + (f" (term {doc['term']})" if m["is_leader"] else "")),
        ("Peer address", m["peer_address"] or "-"),
        ("Client address", m["client_address"] or "- (not registered yet)"),
        ("Healthy", yes(m["healthy"])),
        ("Version", m.get("version") or "-"),
    ])
    if m["is_leader"]:
        return head + "\n\n" + "Replication:\n" + _indent(fields([
            ("Last Index", m["match_index"]), ("Commit Index", doc["commit_index"])]))
    threshold = m.get("effective_catchup_threshold", m.get("catchup_threshold", doc.get("catchup_threshold")))
    if m["caught_up"]:
        caught_up = f"yes (within {threshold} entries)"
        if m["type"] == "Learner":
            caught_up += "; promoted automatically" if m.get("auto_promote", True) else \
                f"; promote it with `kvctl cluster promote {m['id']}`"
    else:
        caught_up = f"no ({m['lag']} entries behind; caught up means within {threshold})"
    pairs = [
        ("Match Index", f"{m['match_index']} (leader at {m['match_index'] + m['lag']}: {m['lag']} entries behind)"),
        ("Bytes Replicated", size(m["bytes_replicated"])),
        ("Caught Up", caught_up),
        ("Last Contact", contact(m)),
    ]
    if m.get("replication_state"):
        pairs.append(("Replication State", m["replication_state"]))
    if m.get("stalled_for"):  # (absent from what a leader of an older release sends)
        pairs.append(("No Progress For", f"{m['stalled_for']:.1f}s (while behind)"))
    if m.get("append_rejections"):
        last = m.get("last_rejection")
        pairs.append(("Appends Rejected", f"{m['append_rejections']}" + ("" if last is None else f" (the last {last:.1f}s ago)")))
    title = "Learner Status:" if m["type"] == "Learner" else "Replication:"
    return head + "\n\n" + title + "\n" + _indent(fields(pairs))


def leader(doc: dict[str, Any]) -> str:
    return fields([("Leader", doc["id"]), ("Term", doc["term"]), ("Peer address", doc["peer_address"] or "-"),
                   ("Client address", doc["client_address"] or "-")])


def health(doc: dict[str, Any]) -> str:
    if doc["leader"]:
        leader_text = doc["leader"] + (f" (term {doc['term']})" if doc.get("term") else "")
    else:
        leader_text = "none (No leader elected)"
    voters, healthy_voters, quorum = doc.get("voters"), doc.get("healthy_voters"), doc.get("quorum")
    quorum_text = "available" if doc["quorum_available"] else "LOST"
    if voters is not None:
        quorum_text += f" ({healthy_voters} of {voters} voters healthy, quorum {quorum})"
    pairs = [
        ("Status", "Healthy" if doc["healthy"] else "Unhealthy"),
        ("Leader", leader_text),
        ("Quorum", quorum_text),
        ("Healthy members", f"{doc['healthy_members']}/{doc['total_members']}"),
        ("Issues", "none" if not doc["issues"] else len(doc["issues"])),
    ]
    return fields(pairs) + "".join(f"\n  - {issue}" for issue in doc["issues"])


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())
