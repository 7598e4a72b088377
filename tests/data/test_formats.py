"""The shapes RLHF data is published in: TRL's unpaired, prompt-completion and conversational rows,
chosen/rejected pairs (TRL, UltraFeedback binarized, Anthropic hh-rlhf), rows in memory."""

import json

import numpy as np
import pytest

from pyro_irm.analysis.metrics import bootstrap_intervals, pair_metrics
from pyro_irm.data.logs import LogFormatError, LogSchema, read_log
from pyro_irm.data.pairs import read_pairs

NO_ACTIONS = LogSchema(actions=())


def _user(text):
    return {"role": "user", "content": text}


def _assistant(text):
    return {"role": "assistant", "content": text}


def _write(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_trl_unpaired_rows_read_as_labelled_rows(tmp_path):
    # TRL's unpaired preference (KTO) format: prompt, completion, a boolean label.
    path = _write(tmp_path / "kto.jsonl", [
        {"prompt": "The sky is", "completion": " blue.", "label": True},
        {"prompt": "The sky is", "completion": " green.", "label": False},
    ])  # fmt: skip
    log = read_log(path, NO_ACTIONS)
    assert log.prompts == ["The sky is", "The sky is"] and log.responses == [" blue.", " green."]
    assert log.labels.tolist() == [1.0, 0.0]


def test_trl_conversational_rows_follow_the_documented_rule(tmp_path):
    path = _write(tmp_path / "chat.jsonl", [
        {"prompt": [_user("What color is the sky?")], "completion": [_assistant("Blue.")], "label": True},
        {"messages": [_user("Hi"), _assistant("Hello!"), _user("Sky color?"), _assistant("Blue.")],
         "label": False},
    ])  # fmt: skip
    log = read_log(path, NO_ACTIONS)
    assert log.prompts[0] == "What color is the sky?" and log.responses[0] == "Blue."
    assert log.prompts[1] == "user: Hi\n\nassistant: Hello!\n\nuser: Sky color?"
    assert log.responses[1] == "Blue."


def test_a_conversation_not_ending_with_the_assistant_is_named(tmp_path):
    path = _write(tmp_path / "chat.jsonl", [{"messages": [_assistant("Hi"), _user("?")], "label": 1}])
    with pytest.raises(LogFormatError, match=r"row 1, field 'messages': the last message is the user's"):
        read_log(path, NO_ACTIONS)


def test_rows_in_memory_read_like_files():
    pandas = pytest.importorskip("pandas")
    datasets = pytest.importorskip("datasets")
    rows = [{"prompt": "p", "response": "r1", "action": 1}, {"prompt": "p", "response": "r2", "action": 0}]
    for source, name in ((rows, "<list>"), (pandas.DataFrame(rows), "<DataFrame>"),
                         (datasets.Dataset.from_list(rows), "<Dataset>")):  # fmt: skip
        log = read_log(source)
        assert log.responses == ["r1", "r2"] and log.actions.reshape(-1).tolist() == [1.0, 0.0]
        assert log.report.source == name
    with pytest.raises(LogFormatError, match=r"<DataFrame>, row 2, field 'action'"):
        read_log(pandas.DataFrame([*rows, {"prompt": "p", "response": "r", "action": 7}][1:]))


def test_pairs_in_every_published_shape(tmp_path):
    hh_chosen = "\n\nHuman: What color is the sky?\n\nAssistant: Blue."
    hh_rejected = "\n\nHuman: What color is the sky?\n\nAssistant: Green."
    path = _write(tmp_path / "pairs.jsonl", [
        # TRL, explicit prompt, standard
        {"prompt": "The sky is", "chosen": " blue.", "rejected": " green."},
        # TRL, explicit prompt, conversational
        {"prompt": [_user("Sky?")], "chosen": [_assistant("Blue.")], "rejected": [_assistant("Green.")]},
        # UltraFeedback binarized: the prompt text, and conversations that repeat it
        {"prompt": "Sky?", "chosen": [_user("Sky?"), _assistant("Blue.")],
         "rejected": [_user("Sky?"), _assistant("Green.")], "score_chosen": 8.0, "score_rejected": 3.0},
        # TRL, implicit prompt, conversational
        {"chosen": [_user("Sky?"), _assistant("Blue.")], "rejected": [_user("Sky?"), _assistant("Green.")]},
        # Anthropic hh-rlhf
        {"chosen": hh_chosen, "rejected": hh_rejected},
    ])  # fmt: skip
    pairs = read_pairs(path)
    assert pairs.prompts[:4] == ["The sky is", "Sky?", "Sky?", "Sky?"]
    assert pairs.chosen[:4] == [" blue.", "Blue.", "Blue.", "Blue."]
    assert pairs.rejected[:4] == [" green.", "Green.", "Green.", "Green."]
    assert pairs.prompts[4] == "\n\nHuman: What color is the sky?\n\nAssistant:"
    assert (pairs.chosen[4], pairs.rejected[4]) == (" Blue.", " Green.")


def test_a_pair_that_cannot_be_split_is_named_and_skippable(tmp_path):
    path = _write(tmp_path / "pairs.jsonl", [
        {"chosen": "no turns here", "rejected": "none here either"},
        {"prompt": "p", "chosen": "a", "rejected": "b"},
    ])  # fmt: skip
    with pytest.raises(LogFormatError, match=r"row 1, field 'chosen/rejected': no prompt column"):
        read_pairs(path)
    pairs = read_pairs(path, on_error="skip")
    assert len(pairs) == 1 and pairs.source_rows == [2] and len(pairs.report.dropped) == 1


def test_pair_metrics_by_hand():
    chosen = np.array([2.0, 1.0, 0.5, 3.0])
    rejected = np.array([1.0, 1.0, 0.7, 0.0])  # right, tie (wrong), wrong, right
    lengths_c = np.array([10, 5, 5, 9])
    lengths_r = np.array([5, 5, 9, 10])  # the chosen one is longer in 1 of the 3 unequal pairs
    metrics = pair_metrics(chosen, rejected, lengths_c, lengths_r)
    assert metrics["accuracy"] == 0.5 and metrics["mean_margin"] == pytest.approx(3.8 / 4)
    # unequal pairs 0, 2, 3: the longer response gets the higher reward in pair 0 only (pair 2: the
    # longer rejected 0.7 > 0.5; pair 3: the longer rejected 0.0 < 3.0) -> 2 of 3
    assert metrics["prefers_longer"] == pytest.approx(2 / 3)
    assert metrics["chosen_longer"] == pytest.approx(1 / 3)
    assert metrics["length_bias"] == pytest.approx(1 / 3)


def test_bootstrap_intervals_hold_the_estimate_and_shrink_with_more_data():
    rng = np.random.default_rng(0)

    def width(size):
        values = rng.normal(size=size)
        intervals = bootstrap_intervals(
            lambda rows, groups: {"mean": float(values[rows].mean())}, np.arange(size)
        )
        low, high = intervals["mean"]
        assert low < values.mean() < high
        return high - low

    small, large = width(100), width(1600)
    # The standard error falls as 1/sqrt(n): the interval is about 4 times narrower.
    assert 3.0 < small / large < 5.5
    assert small == pytest.approx(2 * 1.96 / 10, rel=0.25)
