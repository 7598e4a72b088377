"""OpenAssistant trees read as exported: the nested trees of the bundled sample and the flat
one-message-per-line rows of the Hugging Face release, written here from the same messages."""

import gzip
import json

import numpy as np
import pytest

from pyro_irm.analysis.metrics import rank_metrics, sibling_pairs
from pyro_irm.data import LogSchema, oasst_sample, read_log
from pyro_irm.data.logs import write_records

SAMPLE = oasst_sample()


def _trees():
    with gzip.open(SAMPLE, "rt") as stream:
        return [json.loads(line) for line in stream]


def _flat_rows(trees):
    """The trees as the HF release writes them: one message per line, emojis and labels as lists."""
    rows = []

    def walk(message, tree_id, minute):
        row = {k: v for k, v in message.items() if k != "replies"}
        emojis = message.get("emojis") or {}
        row["emojis"] = {"name": list(emojis), "count": list(emojis.values())} if emojis else None
        row["message_tree_id"] = tree_id
        row["created_date"] = (
            f"2023-02-{1 + minute // 1440:02d}T{minute // 60 % 24:02d}:{minute % 60:02d}:00+00:00"
        )
        rank = message.get("rank")
        if message["role"] == "assistant":
            quality = 0.8 if rank == 0 else 0.3
            row["labels"] = {"name": ["spam", "quality"], "value": [0.0, quality], "count": [3, 3]}
        rows.append(row)
        for number, reply in enumerate(message.get("replies") or []):
            walk(reply, tree_id, minute + 7 * (number + 1))

    for index, tree in enumerate(trees):
        walk(tree, tree["message_id"], index * 31)
    return rows


def test_the_nested_sample_reads_as_one_row_per_reply_with_reactions_exposure_and_ranks():
    log = read_log(SAMPLE)  # the format is found from the first record
    schema = log.schema
    assert schema.log_format == "oasst" and schema.context == ("depth", "siblings", "review_count")
    assert [c.name for c in log.channels] == ["+1", "-1", "red_flag"]
    assert [(c.kind, c.polarity) for c in log.channels] == [
        ("count", "positive"),
        ("count", "negative"),
    ] * 1 + [("count", "negative")]
    assert len(log) == 687 and len(set(log.clusters)) == 100
    assert "100 trees, 1167 messages, 687 assistant replies" in log.report.summary()
    assert "17 synthetic replies kept" in log.report.summary()
    depth = log.context[:, 0]
    first_replies = np.flatnonzero(depth == 1)
    for row in first_replies[:20]:
        turns = log.prompt_turns[row]
        assert len(turns) == 1 and turns[0]["role"] == "user"
    deep = int(np.argmax(depth))
    roles = [turn["role"] for turn in log.prompt_turns[deep]]
    assert len(roles) == depth[deep] and roles == ["user", "assistant"] * (len(roles) // 2) + ["user"]
    # Ranks are for evaluation only: they are no channel and no context.
    assert np.isfinite(log.ranks).sum() == 641 and "rank" not in log.action_names
    assert log.labels is None  # this export holds no rater labels


def test_the_flat_release_reads_the_same_rows_with_age_and_quality_labels(tmp_path):
    nested = read_log(SAMPLE)
    write_records(tmp_path / "flat.jsonl", _flat_rows(_trees()))
    flat = read_log(tmp_path / "flat.jsonl")
    assert flat.schema.context == ("depth", "siblings", "review_count", "age_days")
    order = {m: i for i, m in enumerate(nested.responses)}
    assert sorted(flat.responses) == sorted(nested.responses)
    index = np.array([order[r] for r in flat.responses])
    np.testing.assert_array_equal(flat.actions, nested.actions[index])
    np.testing.assert_array_equal(flat.context[:, :3], nested.context[index])
    np.testing.assert_array_equal(flat.ranks, nested.ranks[index])
    assert [flat.prompt_turns[i] for i in range(5)] == [nested.prompt_turns[j] for j in index[:5]]
    assert (flat.context[:, 3] >= 0).all() and flat.context[:, 3].max() > 1  # days before the newest
    # labels.quality above 0.5 is preferred; here that is the replies ranked best.
    best = flat.ranks == 0
    np.testing.assert_array_equal(flat.labels[best], 1.0)
    assert (flat.labels[np.isfinite(flat.ranks) & ~best] == 0).all()


def _message(message_id, parent, role, text, tree="t1", **fields):
    message = {"message_id": message_id, "parent_id": parent, "message_tree_id": tree, "role": role}
    return {**message, "text": text, "review_count": 3, "deleted": False, "synthetic": False, "rank": None,
            "emojis": None, **fields}  # fmt: skip


def test_deleted_orphaned_and_empty_trees_are_left_out_and_counted(tmp_path):
    rows = [
        _message("p1", None, "prompter", "Hello?"),
        _message("a1", "p1", "assistant", "Hi there.", rank=0, emojis={"name": ["+1"], "count": [2]}),
        _message("a2", "p1", "assistant", "Go away.", rank=1, emojis={"name": ["-1"], "count": [3]}),
        _message("a3", "p1", "assistant", "Removed.", deleted=True),
        _message("p2", "a3", "prompter", "Below a deleted reply."),
        _message("a4", "p2", "assistant", "Lost with its parent."),
        _message("a5", "missing", "assistant", "Its parent is not in the file."),
        _message("a6", "p1", "assistant", "A model wrote me.", synthetic=True),
        _message("q1", None, "prompter", "Nobody answered.", tree="t2"),
    ]
    write_records(tmp_path / "flat.jsonl", rows)
    log = read_log(tmp_path / "flat.jsonl")
    assert sorted(log.responses) == ["A model wrote me.", "Go away.", "Hi there."]
    summary = log.report.summary()
    for note in (
        "1 deleted messages left out",
        "2 messages below a deleted one left out",
        "1 messages whose parent is not in the file left out",
        "1 trees without any assistant reply",
        "1 synthetic replies kept",
    ):
        assert note in summary
    row = log.responses.index("Hi there.")
    assert log.actions[row].tolist() == [2.0, 0.0, 0.0] and log.context[row].tolist() == [1.0, 2.0, 3.0]
    assert log.prompt_ids[row] == "p1" and log.clusters[row] == "t1"


def test_a_mapping_the_user_gives_wins_over_the_oasst_defaults():
    schema = LogSchema(context=("depth",), count_actions=("+1",), log_format="oasst")
    log = read_log(SAMPLE, schema)
    assert log.context_names == ("depth",) and log.action_names == ("+1",)
    with pytest.raises(
        ValueError, match=r"'prompt'.*no such column.*'replies'.*read it with log_format='oasst'"
    ):
        read_log(SAMPLE, LogSchema(log_format="table"))  # read as a table, the trees do not fit


def test_a_message_in_an_oasst_log_that_is_not_one_is_named(tmp_path):
    write_records(tmp_path / "flat.jsonl", [_message("p1", None, "prompter", "Hi"), {"prompt": "x"}])
    with pytest.raises(ValueError, match=r"row 2.*message_id"):
        read_log(tmp_path / "flat.jsonl")


def test_sibling_agreement_counts_the_pairs_a_reward_orders_as_the_rankers_did():
    ranks = np.array([0, 1, 2, 0, 1, np.nan, 0])
    groups = np.array([1, 1, 1, 2, 2, 2, 3])
    better, worse = sibling_pairs(ranks, groups)
    assert sorted(zip(better.tolist(), worse.tolist(), strict=True)) == [(0, 1), (0, 2), (1, 2), (3, 4)]
    assert rank_metrics(ranks, -ranks, groups)["sibling_agreement"] == 1.0
    assert rank_metrics(ranks, ranks, groups)["sibling_agreement"] == 0.0
    tied = rank_metrics(ranks, np.zeros(7), groups)
    assert tied["sibling_agreement"] == 0.5 and tied["sibling_pairs"] == 4
    # best-of-N: group 1's highest reward is rank 1 (wrong), group 2's is rank 0 (right).
    found = rank_metrics(ranks, np.array([0.1, 0.9, 0.0, 0.7, 0.2, 5.0, 1.0]), groups)
    assert found["best_of_n"] == 0.5 and found["sibling_agreement"] == pytest.approx(3 / 4)
