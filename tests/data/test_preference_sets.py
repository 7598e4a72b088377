import numpy as np
import pytest

from pyro_irm.data import (
    LogFormatError,
    SimulationConfig,
    load_preference_set,
    read_log,
    simulate_log,
    write_records,
)


def _messages(prompt, reply):
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]


FORMATS = {
    "helpsteer": (
        [
            {"prompt": "q1", "response": "good", "helpfulness": 4, "correctness": 4},
            {"prompt": "q1", "response": "meh", "helpfulness": 2, "correctness": 1},
        ],
        {"responses": ["good", "meh"], "scores": [4, 2], "preference": [1, 0]},
    ),
    "ultrafeedback": (
        [  # the hub's chat format and the flat format of the shared sample
            {
                "prompt": "q1",
                "chosen": _messages("q1", "best"),
                "rejected": _messages("q1", "worst"),
                "score_chosen": 8.0,
                "score_rejected": 3.0,
            },
            {
                "prompt": "q2",
                "chosen": "fine",
                "rejected": "ok",
                "score_chosen": "7.0",
                "score_rejected": "6.5",
            },
        ],
        {"responses": ["best", "worst", "fine", "ok"], "scores": [8, 3, 7, 6.5], "preference": [1, 0, 1, 0]},
    ),
    "pku-saferlhf": (
        [
            {
                "prompt": "q1",
                "response_0": "safe",
                "response_1": "harmful",
                "response_0_severity_level": 0,
                "response_1_severity_level": 2,
            }
        ],
        {"responses": ["safe", "harmful"], "scores": [0, -2], "preference": [1, 0]},
    ),
    "alpacaeval": (
        [
            {"instruction": "q1", "output": "win", "score": 0.9, "generator": "m"},
            {"prompt": "q1", "response": "lose", "score": 0.1, "generator": "m"},
        ],
        {"responses": ["win", "lose"], "scores": [0.9, 0.1], "preference": [1, 0]},
    ),
}


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_each_adapter_reads_its_published_format(tmp_path, name):
    records, expected = FORMATS[name]
    path = write_records(tmp_path / f"{name}.jsonl", records)
    scored = load_preference_set(name, path)
    assert scored.responses == expected["responses"]
    np.testing.assert_allclose(scored.scores, expected["scores"])
    np.testing.assert_array_equal(scored.preference, expected["preference"])
    assert len(set(scored.prompt_ids[:2])) == 1  # both responses of the first prompt share its id


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_each_adapter_names_the_row_and_field_of_a_malformed_record(tmp_path, name):
    records, _ = FORMATS[name]
    broken = dict(records[0])
    score_field = next(k for k in broken if "score" in k or "helpfulness" in k or "severity" in k)
    broken[score_field] = "n/a"
    path = write_records(tmp_path / f"{name}.jsonl", [records[0], broken])
    with pytest.raises(LogFormatError, match=rf"row 2, field '{score_field}': 'n/a' is not a number"):
        load_preference_set(name, path)
    skipped = load_preference_set(name, path, on_error="skip")
    assert skipped.report.rows_read == 2 and [d.row for d in skipped.report.dropped] == [2]


def test_unknown_data_set_and_hubless_alpacaeval_are_errors():
    with pytest.raises(ValueError, match="unknown data set 'helpsteer3'"):
        load_preference_set("helpsteer3")
    with pytest.raises(ValueError, match="give its file"):
        load_preference_set("alpacaeval")


def test_the_real_ultrafeedback_sample_keeps_both_responses(ultrafeedback_rows):
    assert len(ultrafeedback_rows) == 80
    assert ultrafeedback_rows.prompts[0] == ultrafeedback_rows.prompts[1]
    assert set(np.unique(ultrafeedback_rows.preference)) == {0.0, 1.0}


def _scored(num_rows=4000, seed=0):
    rng = np.random.default_rng(seed)
    records = [
        {
            "prompt": f"q{i // 2}",
            "response": "x" * int(rng.integers(5, 500)),
            "helpfulness": int(rng.integers(0, 5)),
        }
        for i in range(num_rows)
    ]
    return records


def test_paper_setting_hits_the_observation_rate_and_acts_only_on_preferred_rows(tmp_path):
    path = write_records(tmp_path / "hs.jsonl", _scored())
    scored = load_preference_set("helpsteer", path)
    records = simulate_log(
        scored, SimulationConfig(propensity_form="alpha_power", observation_rate=0.5, seed=0)
    )
    propensity = np.array([r["true_propensity_probability"] for r in records])
    assert abs(propensity.mean() - 0.5) < 1e-3  # rescaled exactly to the target rate, capped at 1
    log = read_log(write_records(tmp_path / "log.jsonl", records))
    assert np.all(log.action <= log.labels)  # y = r AND o without noise
    observed = np.array([r["true_engagement"] for r in records])
    assert abs(observed.mean() - 0.5) < 4 * np.sqrt(0.25 / len(records))
    # alpha-power: propensity rises with the graded score
    scores = np.array([r["score"] for r in records])
    assert propensity[scores == 4].mean() > propensity[scores == 0].mean() * 8
    data = log.to_feedback(np.zeros((len(log), 3), dtype=np.float32))
    assert data.truth is not None and float((data.truth.preference == data.labels).float().mean()) == 1.0


def test_logistic_setting_uses_response_length_and_position(tmp_path):
    scored = load_preference_set("helpsteer", write_records(tmp_path / "hs.jsonl", _scored(seed=1)))
    records = simulate_log(scored, SimulationConfig(propensity_form="logistic", feature_strength=2.0, seed=0))
    propensity = np.array([r["true_propensity_probability"] for r in records])
    lengths = np.array([len(r["response"]) for r in records])
    position = np.array([r["position"] for r in records])
    assert np.corrcoef(np.log1p(lengths), propensity)[0, 1] > 0.5
    assert propensity[position == 1].mean() > propensity[position == 5].mean()
