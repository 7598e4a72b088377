"""OpenAssistant conversation trees as a log: every assistant reply is a row.

OpenAssistant (oasst1, oasst2) publishes its messages in two shapes, both read here as exported:

* one message per line (the Hugging Face ``OpenAssistant/oasst1`` rows): ``message_id``,
  ``parent_id``, ``message_tree_id``, ``role``, ``text``, ``emojis``, ``labels``, ``rank``,
  ``created_date``, ...;
* one tree per line: the root message with its ``replies`` nested (the project's ``*.trees.jsonl``).

A reply's prompt is the conversation up to it, as chat messages (``prompter`` is the user turn);
its reactions become count columns (``+1``, ``-1``, ``red_flag`` and the skip markers
``_skip_reply``, ``_skip_labeling``, ``_skip_ranking``); its place in the tree becomes exposure
columns: ``depth`` (1 for a reply to the first prompt), ``siblings`` (the other replies to the same
message), ``review_count`` and, where the export dates its messages, ``age_days`` (days before the
newest message of the file). ``rank`` (0 = best among siblings) and every rater label (as
``labels.<name>``, e.g. ``labels.quality``) are evaluation columns: :data:`OASST_DEFAULTS` never fits
them. Deleted messages (and what hangs below them), replies whose parent is missing and trees without
any reply are left out and counted (:class:`TreeCounts`); synthetic messages are kept and counted.

Who reacts depends on exposure: a reply deep in a tree is browsed less, whatever its quality. The
authors' ``user_id`` is kept as a column but is not the reacting volunteer, so it is no default user.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields, replace
from datetime import datetime

from pyro_irm.data.readers import ParseError
from pyro_irm.data.schema import LogSchema

REACTIONS = ("+1", "-1", "red_flag")
SKIP_MARKERS = ("_skip_reply", "_skip_labeling", "_skip_ranking")
EXPOSURE = ("depth", "siblings", "review_count")
_CHANNEL_FIELDS = ("actions", "negative_actions", "continuous_actions", "count_actions", "ordinal_actions",
                   "declared_channels", "action_values")  # fmt: skip
_ROLES = {"prompter": "user", "assistant": "assistant"}

# What an OpenAssistant log means unless the user maps it otherwise (docs/method.md, "Real logs").
OASST_DEFAULTS = {
    "prompt": "prompt",
    "response": "response",
    "actions": (),
    "declared_channels": ("+1:count", "-1:count:negative", "red_flag:count:negative"),
    "context": EXPOSURE,
    "prompt_id": "parent_id",
    "label": "labels.quality",
    "label_threshold": 0.5,
    "rank": "rank",
    "cluster": "message_tree_id",
    "log_format": "oasst",
}


def looks_like_oasst(record) -> bool:
    """Whether a record is an OpenAssistant message (either shape) rather than a log row."""
    return (
        isinstance(record, dict)
        and "message_id" in record
        and "role" in record
        and ("replies" in record or "parent_id" in record)
        and "response" not in record
    )


def oasst_schema(schema: LogSchema, dated: bool = False) -> LogSchema:
    """``schema`` with :data:`OASST_DEFAULTS` wherever it holds the table defaults (a field the user
    set keeps its value); ``dated``: the export dates its messages, so ``age_days`` is context too."""
    plain = LogSchema()
    defaults = dict(OASST_DEFAULTS)
    if dated:
        defaults["context"] = (*EXPOSURE, "age_days")
    changes = {
        f.name: defaults[f.name]
        for f in fields(LogSchema)
        if f.name in defaults and getattr(schema, f.name) == getattr(plain, f.name)
    }
    if any(getattr(schema, name) != getattr(plain, name) for name in _CHANNEL_FIELDS):
        changes.pop("declared_channels", None)  # the user chose the channels
        changes.pop("actions", None)
        if schema.actions == plain.actions:
            changes["actions"] = ()  # no implied 'action' column: an export has none
    changes["log_format"] = "oasst"
    return replace(schema, **changes)


@dataclass
class TreeCounts:
    """What reading the trees kept and left out, in messages and trees."""

    trees: int = 0
    messages: int = 0
    replies: int = 0
    synthetic_replies: int = 0
    deleted: int = 0
    below_deleted: int = 0
    orphaned: int = 0
    trees_without_replies: int = 0
    roles: Counter = field(default_factory=Counter)

    def notes(self) -> tuple[str, ...]:
        """One line each for what was left out or is worth knowing."""
        notes = [f"{self.trees} trees, {self.messages} messages, {self.replies} assistant replies as rows"]
        for count, what in (
            (self.synthetic_replies, "synthetic replies kept (column 'synthetic')"),
            (self.deleted, "deleted messages left out"),
            (self.below_deleted, "messages below a deleted one left out"),
            (self.orphaned, "messages whose parent is not in the file left out (with what hangs below)"),
            (self.trees_without_replies, "trees without any assistant reply"),
        ):
            if count:
                notes.append(f"{count} {what}")
        unknown = {role: n for role, n in self.roles.items() if role not in _ROLES}
        if unknown:
            notes.append(f"messages of unknown roles left out: {dict(unknown)}")
        return tuple(notes)


def oasst_rows(
    records: Iterable[tuple[int, dict | ParseError]], counts: TreeCounts
) -> Iterator[tuple[int, dict | ParseError]]:
    """Log rows (one per assistant reply, with the source row of its message or tree) from the
    records of either shape; a record that is not a message passes through to be named by the
    reader. ``counts`` is filled in as the trees are read."""
    nested: list[tuple[int, dict]] = []
    flat: dict[str, list[tuple[int, dict]]] = defaultdict(list)
    for row, record in records:
        if isinstance(record, ParseError):
            yield row, record
        elif not looks_like_oasst(record):
            yield (
                row,
                ParseError(
                    "message_id", "is missing: not an OpenAssistant message (message_id, role, parent_id)"
                ),
            )
        elif "replies" in record:
            nested.append((row, record))
        else:
            flat[str(record.get("message_tree_id") or record["message_id"])].append((row, record))
    trees = [_nested_tree(row, root) for row, root in nested]
    trees += [_flat_tree(tree_id, messages, counts) for tree_id, messages in flat.items()]
    dates = [_date(m.message.get("created_date")) for tree in trees for m in tree]
    dates = [d for d in dates if d is not None]
    newest = max(dates) if dates else None
    for tree in trees:
        yield from _tree_rows(tree, counts, newest)


@dataclass
class _Message:
    message: dict
    row: int
    parent: _Message | None
    children: list[_Message] = field(default_factory=list)


def _nested_tree(row: int, root: dict) -> list[_Message]:
    """Every message of a nested tree, parents before their replies."""
    ordered: list[_Message] = []
    stack = [(root, None)]
    while stack:
        message, parent = stack.pop()
        node = _Message(message, row, parent)
        if parent is not None:
            parent.children.append(node)
        ordered.append(node)
        stack.extend((reply, node) for reply in reversed(message.get("replies") or []))
    return ordered


def _flat_tree(tree_id: str, messages: list[tuple[int, dict]], counts: TreeCounts) -> list[_Message]:
    """One tree's messages from flat rows, linked through ``parent_id``; a message whose parent is
    missing is counted and left out with its replies."""
    by_id = {str(m["message_id"]): _Message(m, row, None) for row, m in messages}
    reachable: list[_Message] = []
    for node in by_id.values():
        parent_id = node.message.get("parent_id")
        if parent_id is None:
            continue
        parent = by_id.get(str(parent_id))
        node.parent = parent
        if parent is not None:
            parent.children.append(node)
    roots = [n for n in by_id.values() if n.message.get("parent_id") is None]
    stack = list(reversed(roots))
    while stack:
        node = stack.pop()
        reachable.append(node)
        stack.extend(reversed(node.children))
    counts.orphaned += len(by_id) - len(reachable)
    return reachable


def _tree_rows(
    tree: list[_Message], counts: TreeCounts, newest: datetime | None
) -> Iterator[tuple[int, dict]]:
    counts.trees += 1
    tree_id = str(tree[0].message.get("message_tree_id") or tree[0].message["message_id"]) if tree else ""
    left_out: set[int] = set()
    replies = 0
    for node in tree:
        message = node.message
        counts.messages += 1
        counts.roles[message.get("role")] += 1
        if node.parent is not None and id(node.parent) in left_out:
            counts.below_deleted += 1
            left_out.add(id(node))
            continue
        if message.get("deleted"):
            counts.deleted += 1
            left_out.add(id(node))
            continue
        if message.get("role") not in _ROLES:
            left_out.add(id(node))
            continue
        if message.get("role") != "assistant" or node.parent is None:
            continue
        replies += 1
        counts.replies += 1
        counts.synthetic_replies += bool(message.get("synthetic"))
        yield node.row, _reply_row(node, tree_id, newest)
    if not replies:
        counts.trees_without_replies += 1


def _reply_row(node: _Message, tree_id: str, newest: datetime | None) -> dict:
    message = node.message
    path = []
    parent = node.parent
    while parent is not None:
        path.append(parent)
        parent = parent.parent
    turns = [
        {
            "role": _ROLES.get(p.message.get("role"), str(p.message.get("role"))),
            "content": p.message.get("text"),
        }
        for p in reversed(path)
    ]
    live_siblings = [s for s in node.parent.children if not s.message.get("deleted") and s is not node]
    row = {
        "prompt": turns,
        "response": message.get("text"),
        "message_id": message.get("message_id"),
        "parent_id": str(node.parent.message.get("message_id")),
        "message_tree_id": tree_id,
        "depth": len(path),
        "siblings": sum(s.message.get("role") == "assistant" for s in live_siblings),
        "review_count": message.get("review_count") or 0,
        "rank": message.get("rank"),
        "synthetic": int(bool(message.get("synthetic"))),
        "lang": message.get("lang"),
        "model_name": message.get("model_name"),
        "user_id": message.get("user_id"),
    }
    reactions = _emojis(message.get("emojis"))
    for name in (*REACTIONS, *SKIP_MARKERS):
        row[name] = reactions.get(name, 0)
    for name, value in _labels(message.get("labels")).items():
        row[f"labels.{name}"] = value
    created = _date(message.get("created_date"))
    if created is not None and newest is not None:
        row["age_days"] = (newest - created).total_seconds() / 86400.0
    return row


def _emojis(value) -> dict[str, int]:
    """``{name: count}`` from either ``{"+1": 3}`` or ``{"name": ["+1"], "count": [3]}``."""
    if not value:
        return {}
    if isinstance(value, dict) and isinstance(value.get("name"), list):
        return dict(zip(value["name"], value.get("count") or [], strict=False))
    return dict(value) if isinstance(value, dict) else {}


def _labels(value) -> dict[str, float]:
    """``{name: value}`` from ``{"name": [...], "value": [...]}``, ``{"quality": {"value": v}}`` or
    ``{"quality": v}``."""
    if not value or not isinstance(value, dict):
        return {}
    if isinstance(value.get("name"), list):
        return dict(zip(value["name"], value.get("value") or [], strict=False))
    return {name: (v.get("value") if isinstance(v, dict) else v) for name, v in value.items()}


def _date(value) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
