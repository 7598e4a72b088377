import gzip
import json

import numpy as np
import pytest

from pyro_irm.data import LogFormatError, LogSchema, read_log, write_records

ROWS = [
    {"prompt": "p1", "response": "a", "action": 1, "label": 1, "position": 1, "dwell_s": 40.0},
    {"prompt": "p1", "response": "b", "action": 0, "label": 0, "position": 2, "dwell_s": 3.5},
    {"prompt": "p2", "response": "", "action": 0, "label": None, "position": 3, "dwell_s": 0.0},
]


@pytest.mark.parametrize("name", ["log.jsonl", "log.jsonl.gz", "log.csv", "log.tsv", "log.parquet"])
def test_every_format_reads_back_the_same_rows(tmp_path, name):
    path = write_records(tmp_path / name, ROWS)
    log = read_log(path, LogSchema(context=("position",)))
    assert log.prompts == ["p1", "p1", "p2"]
    assert log.responses == ["a", "b", ""]  # an empty response is text, not a missing value
    np.testing.assert_array_equal(log.action, [1, 0, 0])
    np.testing.assert_array_equal(log.labels[:2], [1, 0])
    assert np.isnan(log.labels[2])
    np.testing.assert_array_equal(log.context[:, 0], [1, 2, 3])
    assert log.prompt_ids[0] == log.prompt_ids[1] != log.prompt_ids[2]
    assert log.report.rows_kept == 3 and not log.report.dropped


def test_saved_hugging_face_dataset_directory(tmp_path):
    import datasets

    datasets.Dataset.from_list([{k: v for k, v in r.items() if k != "label"} for r in ROWS]).save_to_disk(
        str(tmp_path / "saved")
    )
    log = read_log(tmp_path / "saved")
    assert len(log) == 3 and log.labels is None


def test_counts_and_durations_become_actions_through_thresholds(tmp_path):
    path = write_records(tmp_path / "log.jsonl", ROWS)
    schema = LogSchema(actions=("action", "dwell_s"), action_thresholds=(("dwell_s", 30.0),))
    log = read_log(path, schema)
    np.testing.assert_array_equal(log.actions, [[1, 1], [0, 0], [0, 0]])
    graded = read_log(path, LogSchema(actions=("dwell_s",), action_thresholds=(("dwell_s", 2.0),)))
    np.testing.assert_array_equal(graded.action, [1, 1, 0])


def test_column_names_are_mappable(tmp_path):
    rows = [
        {"q": "x", "a": "y", "copied": "true", "stars": 9},
        {"q": "x", "a": "z", "copied": "false", "stars": 2},
    ]
    path = write_records(tmp_path / "log.csv", rows)
    log = read_log(
        path, LogSchema(prompt="q", response="a", actions=("copied",), label="stars", label_threshold=6.5)
    )
    np.testing.assert_array_equal(log.action, [1, 0])
    np.testing.assert_array_equal(log.labels, [1, 0])


def _write_lines(path, lines):
    with gzip.open(path, "wt") if str(path).endswith(".gz") else open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


MALFORMED = [
    json.dumps({"prompt": "ok", "response": "fine", "action": 1}),
    "{not json",
    json.dumps({"response": "no prompt", "action": 0}),
    json.dumps({"prompt": "p", "response": "r", "action": "maybe"}),
    json.dumps({"prompt": "p", "response": "r", "action": 2}),
    json.dumps({"prompt": "p", "response": 7, "action": 0}),
    json.dumps({"prompt": "p", "response": "r", "action": 0, "label": "good"}),
    json.dumps({"prompt": "last", "response": "kept", "action": 0}),
]


@pytest.mark.parametrize(
    ("row", "field", "reason"),
    [
        (2, "(row)", "not valid JSON"),
        (3, "prompt", "is missing"),
        (4, "action", "'maybe' is not 0/1, a number or a yes/no word"),
    ],
)
def test_the_first_bad_row_stops_reading_with_file_row_and_field(tmp_path, row, field, reason):
    lines = [MALFORMED[0], *[MALFORMED[row - 1]]] if row > 2 else MALFORMED[:2]
    path = _write_lines(tmp_path / "log.jsonl", lines)
    with pytest.raises(LogFormatError) as error:
        read_log(path)
    message = str(error.value)
    assert str(path) in message and "row 2" in message and reason in message
    assert f"field {field!r}" in message


def test_skipping_bad_rows_reports_each_and_keeps_the_rest(tmp_path):
    path = _write_lines(tmp_path / "log.jsonl.gz", MALFORMED)
    log = read_log(path, on_error="skip")
    assert log.prompts == ["ok", "last"]
    np.testing.assert_array_equal(log.source_rows, [1, 8])
    report = log.report
    assert report.rows_read == 8 and report.rows_kept == 2
    assert [d.row for d in report.dropped] == [2, 3, 4, 5, 6, 7]
    assert [d.field for d in report.dropped] == ["(row)", "prompt", "action", "action", "response", "label"]
    summary = report.summary()
    assert "dropped 6" in summary and "2, 3, 4, 5, 6, 7" in summary
    assert "2 is not 0 or 1" in " ".join(d.reason for d in report.dropped)


def test_a_log_with_no_usable_rows_is_an_error(tmp_path):
    path = _write_lines(tmp_path / "log.jsonl", MALFORMED[1:3])
    with pytest.raises(LogFormatError, match="no usable rows"):
        read_log(path, on_error="skip")


def test_unknown_formats_and_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_log(tmp_path / "absent.jsonl")
    (tmp_path / "log.xlsx").write_text("x")
    with pytest.raises(ValueError, match="unknown format '.xlsx'"):
        read_log(tmp_path / "log.xlsx")


def test_to_feedback_standardizes_context_and_keeps_labels(tmp_path):
    path = write_records(tmp_path / "log.jsonl", ROWS)
    log = read_log(path, LogSchema(context=("position",)))
    data = log.to_feedback(np.ones((3, 4), dtype=np.float32))
    assert abs(float(data.context.mean())) < 1e-6 and abs(float(data.context.std(unbiased=False)) - 1) < 1e-5
    assert data.labels.shape == (3,) and data.truth is None
    with pytest.raises(ValueError, match="embeddings have 2 rows but the log has 3"):
        log.to_feedback(np.ones((2, 4), dtype=np.float32))


def test_an_observed_column_makes_an_observational_log(tmp_path):
    rows = [
        {"prompt": "p", "response": "a", "action": 1, "seen": 1, "p_seen": 0.5},
        {"prompt": "p", "response": "b", "action": 0, "seen": 0, "p_seen": 0.25},
        {"prompt": "q", "response": "c", "action": 0, "seen": 1, "p_seen": 1.0},
    ]
    path = write_records(tmp_path / "log.jsonl", rows)
    log = read_log(path, LogSchema(observed="seen", propensity="p_seen"))
    data = log.to_feedback(np.zeros((3, 2), dtype=np.float32))
    assert data.setting == "observational"
    assert data.observed.tolist() == [1.0, 0.0, 1.0] and data.propensity.tolist() == [0.5, 0.25, 1.0]
    assert data.prompt_ids.tolist() == [0, 0, 1]
    bad = write_records(tmp_path / "bad.jsonl", [*rows, {**rows[0], "seen": 0}])
    with pytest.raises(LogFormatError, match=r"row 4, field 'action': is 1 but 'seen' is 0"):
        read_log(bad, LogSchema(observed="seen"))
    bad = write_records(tmp_path / "bad2.jsonl", [{**rows[0], "p_seen": 1.5}])
    with pytest.raises(LogFormatError, match=r"row 1, field 'p_seen': 1.5 is not in \(0, 1\]"):
        read_log(bad, LogSchema(propensity="p_seen"))
