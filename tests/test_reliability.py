"""Faults a user's input can cause end in exit 2 with the file, row and field named; outputs appear
complete or not at all; a terminated command exits as an interrupted one."""

import argparse
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from pyro_irm.cli import main
from pyro_irm.cli.schema import read_log_from_args
from pyro_irm.data.logs import LogSchema, read_log, write_records

# These faults are about inputs, not identification: most logs here give the model nothing else.
pytestmark = pytest.mark.filterwarnings("ignore::pyro_irm.models.identifiability.IdentifiabilityWarning")


def _run_with_embeddings(tmp_path, rows=60, dim=6, method="naive"):
    rng = np.random.default_rng(0)
    log = tmp_path / "log.jsonl"
    write_records(
        log,
        [
            {"prompt": f"p{i // 2}", "response": f"r{i}", "action": int(rng.random() < 0.4)}
            for i in range(rows)
        ],
    )
    embeddings = tmp_path / "log.npy"
    np.save(embeddings, rng.normal(size=(rows, dim)).astype(np.float32))
    run = tmp_path / "run"
    fit = ["fit", str(log), "--embeddings", str(embeddings), "--out", str(run), "--max-epochs", "2"]
    code = main([*fit, "--quiet", "--method", method])
    assert code == 0
    return log, embeddings, run


def test_score_refuses_non_finite_embeddings_and_writes_nothing(tmp_path, capsys):
    log, embeddings, run = _run_with_embeddings(tmp_path)
    values = np.load(embeddings)
    values[7, 3] = np.nan
    bad = tmp_path / "bad.npy"
    np.save(bad, values)
    out = tmp_path / "scores.jsonl"
    code = main(["score", str(run), str(log), "--embeddings", str(bad), "--out", str(out), "--quiet"])
    assert code == 2
    message = capsys.readouterr().err
    assert "bad.npy: row 7, column 3 is nan" in message and "Traceback" not in message
    assert not out.exists()


def test_a_failed_write_leaves_no_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.jsonl"
    records = [{"a": 1}, {"a": object()}]  # the second cannot be written as JSON
    with pytest.raises(TypeError):
        write_records(target, records)
    assert not target.exists() and list(tmp_path.iterdir()) == []
    write_records(target, [{"a": 1}])
    write_records(target, [{"a": 2}, {"a": 3}])  # replaces the file whole
    assert [json.loads(line)["a"] for line in target.read_text().splitlines()] == [2, 3]


@pytest.mark.parametrize("value", [0, 1])
def test_a_log_with_one_class_of_action_is_refused(tmp_path, capsys, value):
    log = tmp_path / "log.jsonl"
    write_records(log, [{"prompt": "p", "response": f"r{i}", "action": value} for i in range(20)])
    embeddings = tmp_path / "log.npy"
    np.save(embeddings, np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32))
    for method in ("implicitrm", "ubpr"):
        code = main(["fit", str(log), "--embeddings", str(embeddings), "--out", str(tmp_path / method),
                     "--method", method, "--quiet"])  # fmt: skip
        assert code == 2
        assert f"is {value} on every row" in capsys.readouterr().err
        assert not (tmp_path / method).exists()


def test_skipping_most_rows_stops_and_drops_are_reported_even_when_quiet(tmp_path, capsys):
    log = tmp_path / "log.jsonl"
    # A 1-10 score in the label column: every row but one is "bad" when labels must be 0/1.
    rows = [{"prompt": "p", "response": f"r{i}", "action": i % 2, "label": 7 if i else 1} for i in range(20)]
    write_records(log, rows)
    code = main(["fit", str(log), "--out", str(tmp_path / "run"), "--skip-bad-rows", "--quiet"])
    assert code == 2
    message = capsys.readouterr().err
    assert "19 of 20 rows (95.0%) do not fit the schema" in message and "--label-threshold" in message
    for row in rows:  # one bad row in twenty
        row["label"] = 1 if row["response"] != "r3" else 9
    write_records(log, rows)
    quiet = argparse.Namespace(quiet=True, skip_bad_rows=True, max_bad_fraction=0.1, split=None)
    kept = read_log_from_args(quiet, str(log), LogSchema())
    assert len(kept) == 19
    assert "dropped 1 (1 x label: 9 is not 0 or 1" in capsys.readouterr().err  # said, though quiet
    with pytest.raises(ValueError, match="more than the 1.0% allowed"):
        read_log(log, LogSchema(), on_error="skip", max_bad_fraction=0.01)


# ---------------------------------------------------------------- encodings, sizes, numbers


def _rows(count=20):
    return [{"prompt": f"p{i // 2}", "response": f"r{i}", "action": i % 2} for i in range(count)]


def _csv_text(rows):
    lines = ["prompt,response,action", *(f"{r['prompt']},{r['response']},{r['action']}" for r in rows)]
    return "\n".join(lines) + "\n"


def test_a_byte_order_mark_is_dropped_and_fields_of_any_size_are_read(tmp_path):
    rows = _rows()
    (tmp_path / "bom.csv").write_text(_csv_text(rows), encoding="utf-8-sig")
    (tmp_path / "bom.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8-sig")
    for name in ("bom.csv", "bom.jsonl"):
        log = read_log(tmp_path / name, LogSchema())
        assert log.prompts[0] == "p0" and len(log) == 20
    rows[3]["response"] = "x" * 300_000  # over the csv module's default limit of 128 KiB
    (tmp_path / "big.csv").write_text(_csv_text(rows))
    assert len(read_log(tmp_path / "big.csv", LogSchema()).responses[3]) == 300_000


@pytest.mark.parametrize("suffix", ["jsonl", "csv"])
def test_invalid_utf8_is_named_by_row_and_skippable(tmp_path, capsys, suffix):
    rows = _rows()
    text = _csv_text(rows) if suffix == "csv" else "".join(json.dumps(r) + "\n" for r in rows)
    raw = text.encode().replace(b"r6", b"r\xff6")
    path = tmp_path / f"log.{suffix}"
    path.write_bytes(raw)
    code = main(["fit", str(path), "--out", str(tmp_path / "run"), "--quiet"])
    assert code == 2
    message = capsys.readouterr().err
    row = "row 7"  # rows count from 1
    where = "byte offset" if suffix == "jsonl" else "field 'response'"
    assert f"log.{suffix}, {row}" in message and "0xff" in message and where in message
    assert "Traceback" not in message
    log = read_log(path, LogSchema(), on_error="skip", max_bad_fraction=0.1)
    assert len(log) == 19 and "r\ufffd6" not in log.responses


def test_a_lone_surrogate_is_named(tmp_path):
    lines = [json.dumps(r) for r in _rows()]
    lines[4] = lines[4].replace('"r4"', '"r\\ud8004"')
    (tmp_path / "log.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"row 5, field 'response': character 1 is a lone surrogate"):
        read_log(tmp_path / "log.jsonl", LogSchema())


def test_numbers_out_of_range_are_named_like_any_bad_value(tmp_path, capsys):
    lines = [json.dumps(r) for r in _rows()]
    lines[4] = lines[4].replace('"action": 0', '"action": ' + "9" * 400)
    lines[8] = lines[8].replace('"action": 0', '"action": ' + "9" * 5000)  # past Python's digit limit
    (tmp_path / "log.jsonl").write_text("\n".join(lines) + "\n")
    code = main(["fit", str(tmp_path / "log.jsonl"), "--out", str(tmp_path / "run"), "--quiet"])
    assert code == 2
    message = capsys.readouterr().err
    assert "row 5, field 'action': 9999" in message and "(400 characters) is out of range" in message
    log = read_log(tmp_path / "log.jsonl", LogSchema(), on_error="skip", max_bad_fraction=0.2)
    assert len(log) == 18 and len(log.report.dropped) == 2
    assert "thousands of digits, out of range" in log.report.dropped[1].reason


# ---------------------------------------------------------------- embeddings and checkpoints


def test_embeddings_of_other_rows_are_refused_by_their_fingerprint(tmp_path, capsys):
    from pyro_irm.encoders.cache import rows_fingerprint
    from pyro_irm.encoders.embed import save_embeddings

    rows = _rows(40)
    write_records(tmp_path / "log.jsonl", rows)
    write_records(tmp_path / "shuffled.jsonl", rows[::-1])  # same shape, other order
    values = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    fingerprint = rows_fingerprint([r["prompt"] for r in rows], [r["response"] for r in rows])
    save_embeddings(tmp_path / "log.npy", values, {"log": "log.jsonl", "rows_fingerprint": fingerprint})
    fit = ["fit", "--embeddings", str(tmp_path / "log.npy"), "--max-epochs", "1", "--quiet"]
    assert main([*fit, str(tmp_path / "log.jsonl"), "--out", str(tmp_path / "good")]) == 0
    assert main([*fit, str(tmp_path / "shuffled.jsonl"), "--out", str(tmp_path / "bad")]) == 2
    assert "log.npy was embedded from other rows than" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_an_unreadable_npy_is_named(tmp_path, capsys):
    write_records(tmp_path / "log.jsonl", _rows())
    (tmp_path / "empty.npy").write_bytes(b"")
    code = main(["fit", str(tmp_path / "log.jsonl"), "--embeddings", str(tmp_path / "empty.npy"),
                 "--out", str(tmp_path / "run"), "--quiet"])  # fmt: skip
    assert code == 2
    assert "empty.npy: not a readable .npy array" in capsys.readouterr().err


def _checkpoint_fit(tmp_path, embeddings, *extra):
    return main(["fit", str(tmp_path / "log.jsonl"), "--embeddings", str(embeddings), "--out",
                 str(tmp_path / "run"), "--checkpoint-dir", str(tmp_path / "ck"), "--max-epochs", "2",
                 "--quiet", *extra])  # fmt: skip


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ("shuffled", "data: another log"),
        ("--learning-rate", "learning_rate: saved 0.003, now 0.01"),
        ("--reward-hidden", "reward_hidden saved [256, 64], now [8]"),
        ("truncated", "not a readable checkpoint"),
        ("garbage", "not a readable checkpoint"),
    ],
)
def test_a_checkpoint_of_another_fit_or_a_damaged_one_is_refused(tmp_path, capsys, change, named):
    write_records(tmp_path / "log.jsonl", _rows(40))
    values = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    np.save(tmp_path / "log.npy", values)
    assert _checkpoint_fit(tmp_path, tmp_path / "log.npy") == 0
    checkpoint = tmp_path / "ck" / "checkpoint.pt"
    extra, embeddings = [], tmp_path / "log.npy"
    if change == "shuffled":
        np.save(tmp_path / "other.npy", values[::-1].copy())
        embeddings = tmp_path / "other.npy"
    elif change == "truncated":
        checkpoint.write_bytes(checkpoint.read_bytes()[:3000])
    elif change == "garbage":
        checkpoint.write_bytes(b"garbage")
    else:
        extra = [change, "0.01" if change == "--learning-rate" else "8"]
    capsys.readouterr()
    assert _checkpoint_fit(tmp_path, embeddings, *extra) == 2
    message = capsys.readouterr().err
    assert named in message and "Traceback" not in message


# ---------------------------------------------------------------- numerical guards


def _simulated(tmp_path, rows=600, scale=1.0):
    rng = np.random.default_rng(0)
    values = rng.normal(size=(rows, 8)).astype(np.float32)
    preferred = values @ rng.normal(size=8) > 0
    acted = preferred & (rng.random(rows) < 0.5)
    records = [
        {"prompt": f"p{i // 2}", "response": f"r{i}", "action": int(acted[i]), "label": int(preferred[i]),
         "prop": 1e-12 if i % 10 == 0 else 0.5}
        for i in range(rows)
    ]  # fmt: skip
    write_records(tmp_path / "log.jsonl", records)
    np.save(tmp_path / "log.npy", values * np.float32(scale))
    return ["fit", str(tmp_path / "log.jsonl"), "--embeddings", str(tmp_path / "log.npy"), "--out",
            str(tmp_path / "run"), "--quiet"]  # fmt: skip


def test_a_diverging_fit_stops_naming_the_step_and_writes_nothing(tmp_path, capsys):
    fit = _simulated(tmp_path)
    assert main([*fit, "--method", "naive", "--learning-rate", "1e3", "--max-epochs", "3"]) == 2
    message = capsys.readouterr().err
    assert (
        "the fit diverged at epoch " in message
        and ", step " in message
        and "Lower learning_rate (now 1000)" in message
    )
    assert not (tmp_path / "run").exists()
    assert (
        main([*fit, "--method", "naive", "--max-epochs", "3"]) == 0
    )  # the same log fits at the default rate


def test_a_fit_worse_than_the_action_rate_is_called_a_failure(tmp_path, caplog):
    fit = _simulated(tmp_path)
    with caplog.at_level("WARNING", logger="pyro_irm"):
        assert main([*fit, "--learning-rate", "1e3", "--max-epochs", "3"]) == 0
    assert "it failed to fit" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="pyro_irm"):
        assert main([*fit, "--max-epochs", "3"]) == 0
    assert "failed to fit" not in caplog.text


def test_embeddings_too_large_for_float32_are_refused(tmp_path, capsys):
    fit = _simulated(tmp_path, scale=1e37)
    assert main(fit) == 2
    assert "embeddings: values up to" in capsys.readouterr().err


def test_clipped_propensities_are_counted_warned_about_and_recorded(tmp_path, caplog):
    fit = [*_simulated(tmp_path), "--method", "ips", "--propensity-source", "given",
           "--propensity-col", "prop", "--max-epochs", "2"]  # fmt: skip
    with caplog.at_level("WARNING", logger="pyro_irm"):
        assert main([*fit, "--propensity-clip", "1e-9"]) == 0
    training_rows = 540  # 90% of 600
    assert "of 540 training rows" in caplog.text and "raise propensity_clip" in caplog.text
    recorded = json.loads((tmp_path / "run" / "run.json").read_text())["nuisance"]["propensity_clipping"]
    below = int(recorded.split(" of ")[0])
    assert abs(below - training_rows / 10) <= 15 and "propensity_clip=1e-09" in recorded


# ---------------------------------------------------------------- killed and terminated commands


def _spawn(arguments):
    code = f"import sys; from pyro_irm.cli import main; sys.exit(main({arguments!r}))"
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_for(predicate, process, seconds=120.0):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT])
def test_killing_score_midway_leaves_no_partial_output(tmp_path, how):
    rows = 200_000
    log, embeddings, run = _run_with_embeddings(tmp_path, rows=rows, dim=4)
    out = tmp_path / "scores" / "scores.jsonl"
    out.parent.mkdir()
    process = _spawn(["score", str(run), str(log), "--embeddings", str(embeddings), "--out", str(out),
                      "--with-text", "--quiet"])  # fmt: skip
    _wait_for(lambda: any(out.parent.iterdir()), process)  # the temporary beside the target is being written
    process.send_signal(how)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == (-signal.SIGKILL if how == signal.SIGKILL else 130), stderr
    assert not out.exists()
    if how == signal.SIGINT:  # an interruption it sees cleans up its temporary too
        assert list(out.parent.iterdir()) == [] and "Traceback" not in stderr


@pytest.mark.slow
def test_a_fit_terminated_and_resumed_ends_where_an_uninterrupted_fit_ends(tmp_path):
    from safetensors.numpy import load_file

    rng = np.random.default_rng(3)
    rows, dim = 30_000, 16
    values = rng.normal(size=(rows, dim)).astype(np.float32)
    preferred = values @ rng.normal(size=dim) > 0
    acted = preferred & (rng.random(rows) < 1 / (1 + np.exp(-values[:, 0])))
    records = [{"prompt": f"p{i // 2}", "response": f"r{i}", "action": int(acted[i])} for i in range(rows)]
    write_records(tmp_path / "log.jsonl", records)
    np.save(tmp_path / "log.npy", values)

    def fit(name):
        return ["fit", str(tmp_path / "log.jsonl"), "--embeddings", str(tmp_path / "log.npy"), "--out",
                str(tmp_path / name), "--checkpoint-dir", str(tmp_path / f"ck_{name}"), "--max-epochs", "12",
                "--patience", "100", "--batch-size", "256", "--quiet"]  # fmt: skip

    process = _spawn(fit("resumed"))
    checkpoint = tmp_path / "ck_resumed" / "checkpoint.pt"
    _wait_for(checkpoint.exists, process)
    time.sleep(1.0)  # into a later epoch
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and "interrupted" in stderr and "Traceback" not in stderr, stderr
    assert not (tmp_path / "resumed").exists()  # no run directory from a cut-short fit
    assert main(fit("resumed")) == 0
    assert main(fit("whole")) == 0
    resumed = load_file(tmp_path / "resumed" / "model" / "weights.safetensors")
    whole = load_file(tmp_path / "whole" / "model" / "weights.safetensors")
    assert resumed.keys() == whole.keys()
    for name in whole:
        np.testing.assert_array_equal(resumed[name], whole[name], err_msg=name)


@pytest.mark.slow
def test_a_reader_that_goes_away_ends_score_quietly(tmp_path):
    log, embeddings, run = _run_with_embeddings(tmp_path, rows=20_000, dim=4)  # far more than a pipe holds
    process = _spawn(["score", str(run), str(log), "--embeddings", str(embeddings), "--quiet"])
    assert json.loads(process.stdout.readline())["row"] == 1  # `| head -1`
    process.stdout.close()
    with process.stderr:
        stderr = process.stderr.read()
    assert process.wait(timeout=60) == 0, stderr
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr


# ---------------------------------------------------------------- the CLI's numbers are the library's


def test_score_and_evaluate_write_the_numbers_the_library_computes(tmp_path):
    from pyro_irm.evaluation import evaluate_run
    from pyro_irm.runs import Run

    log, embeddings, run_dir = _run_with_embeddings(tmp_path, rows=80)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    for row in rows:
        row["label"] = int(row["action"] or row["response"].endswith("7"))
    write_records(log, rows)
    out = tmp_path / "scores.jsonl"
    assert (
        main(["score", str(run_dir), str(log), "--embeddings", str(embeddings), "--out", str(out), "--quiet"])
        == 0
    )
    written = np.array([json.loads(line)["reward"] for line in out.read_text().splitlines()])
    run = Run.load(run_dir)
    values = np.load(embeddings)
    np.testing.assert_allclose(written, run.reward_model.score(values).numpy(), rtol=0, atol=1e-6)
    assert np.ptp(written) > 1e-4
    metrics = tmp_path / "metrics.json"
    code = main(["evaluate", str(run_dir), "--log", str(log), "--embeddings", str(embeddings), "--json",
                 str(metrics), "--quiet"])  # fmt: skip
    assert code == 0
    library = evaluate_run(run, read_log(log, LogSchema(actions=())), values)
    reported = json.loads(metrics.read_text())["run"]
    for name in ("auc", "log_loss", "ece", "pairwise_accuracy", "length_bias"):
        assert reported[name] == pytest.approx(library[name]), name


def test_a_bug_exits_1_with_its_traceback(tmp_path):
    code = (
        "import sys; from pyro_irm.cli import demo, main\n"
        "def broken(args):\n    raise RuntimeError('a bug')\n"
        "demo.run = broken\nsys.exit(main(['demo']))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "RuntimeError: a bug" in result.stderr


def test_a_warning_reads_as_a_message_not_a_source_line(tmp_path):
    log, embeddings, _ = _run_with_embeddings(tmp_path)
    arguments = [
        "fit",
        str(log),
        "--embeddings",
        str(embeddings),
        "--out",
        str(tmp_path / "again"),
        "--quiet",
    ]
    process = _spawn(arguments)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert "warning: Nothing separates the reward from the propensity" in stderr
    assert "_fit_once" not in stderr and ".py:" not in stderr


def test_embeddings_from_another_reading_of_the_runs_encoder_are_refused(tmp_path, capsys, tiny_decoders):
    rng = np.random.default_rng(0)
    words = "the a reward model copies code answer short long helpful wrong".split()
    sizes = rng.integers(1, 12, size=40)
    rows = [{"prompt": f"question {i % 5}", "response": " ".join(rng.choice(words, size=int(sizes[i]))),
             "action": int(rng.random() < 0.4)} for i in range(40)]  # fmt: skip
    log = write_records(tmp_path / "log.jsonl", rows)
    common = ["--encoder", str(tiny_decoders["llama"]), "--encoder-device", "cpu", "--quiet",
              "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    assert main(["embed", str(log), "--out", str(tmp_path / "last.npy"), *common]) == 0
    # The same model and width, mean-pooled: the rewards would be wrong without a word.
    assert (
        main(["embed", str(log), "--out", str(tmp_path / "mean.npy"), "--encoder-pooling", "mean", *common])
        == 0
    )
    run = tmp_path / "run"
    fit = [
        "fit",
        str(log),
        "--embeddings",
        str(tmp_path / "last.npy"),
        "--out",
        str(run),
        "--max-epochs",
        "2",
    ]
    assert main([*fit, "--quiet", "--method", "naive"]) == 0
    score = ["score", str(run), str(log), "--quiet"]
    assert main([*score, "--embeddings", str(tmp_path / "last.npy"), "--out", str(tmp_path / "ok.csv")]) == 0
    capsys.readouterr()
    code = main([*score, "--embeddings", str(tmp_path / "mean.npy"), "--out", str(tmp_path / "wrong.csv")])
    error = capsys.readouterr().err
    assert code == 2 and "mean.npy was embedded with another encoder" in error
    assert "pooling: 'mean' there, 'last' in the run" in error
    assert not (tmp_path / "wrong.csv").exists()


def test_an_output_that_is_an_input_is_refused_before_anything_is_written(tmp_path, capsys):
    log, embeddings, run = _run_with_embeddings(tmp_path)
    before = log.read_bytes()
    code = main(["score", str(run), str(log), "--embeddings", str(embeddings), "--out", str(log)])
    assert code == 2 and f"--out {log} is the input" in capsys.readouterr().err
    assert log.read_bytes() == before
    code = main(["best-of-n", str(run), str(log), "--embeddings", str(embeddings), "--out", str(embeddings)])
    assert code == 2 and "is the --embeddings" in capsys.readouterr().err
    # A JSON-lines log named .json is where `embed --out clicks.npy` would put its metadata.
    clicks = tmp_path / "clicks.json"
    clicks.write_bytes(before)
    code = main(["embed", str(clicks), "--out", str(tmp_path / "clicks.npy"), "--encoder-device", "cpu"])
    assert code == 2 and "--out's metadata file" in capsys.readouterr().err
    assert clicks.read_bytes() == before and not (tmp_path / "clicks.npy").exists()


def test_a_config_file_applies_its_sections_and_refuses_a_misspelt_one(tmp_path, capsys):
    log, embeddings, _ = _run_with_embeddings(tmp_path)
    config = tmp_path / "config.toml"
    config.write_text("[train]\nmax_epochs = 1\n\n[model]\nreward_head = 'linear'\n")
    fit = [
        "fit",
        str(log),
        "--embeddings",
        str(embeddings),
        "--quiet",
        "--method",
        "naive",
        "--config",
        str(config),
    ]
    assert main([*fit, "--out", str(tmp_path / "good")]) == 0
    info = json.loads((tmp_path / "good" / "run.json").read_text())
    assert info["train_config"]["max_epochs"] == 1 and info["model_config"]["reward_head"] == "linear"
    config.write_text("[train]\nmax_epochs = 1\n\n[modle]\nreward_head = 'linear'\n")
    assert main([*fit, "--out", str(tmp_path / "misspelt")]) == 2
    error = capsys.readouterr().err
    assert "unknown section(s) ['modle']" in error and "[model]" in error
    config.write_text("train = 3\n")
    assert main([*fit, "--out", str(tmp_path / "flat")]) == 2
    assert "[train] must be a table of settings" in capsys.readouterr().err
    assert not (tmp_path / "misspelt").exists() and not (tmp_path / "flat").exists()


def test_a_context_column_that_is_the_target_is_refused(tmp_path, capsys):
    log, embeddings, _ = _run_with_embeddings(tmp_path)
    fit = ["fit", str(log), "--embeddings", str(embeddings), "--out", str(tmp_path / "run2"), "--quiet"]
    assert main([*fit, "--context-col", "action"]) == 2
    error = capsys.readouterr().err
    assert "context columns must be features" in error and "'action' is an action column" in error


# ---------------------------------------------------------------- runs tied to their weights


def test_a_run_whose_weights_were_replaced_is_refused_naming_the_file(tmp_path, capsys):
    log, embeddings, run = _run_with_embeddings(tmp_path)
    other = tmp_path / "other"
    fit = ["fit", str(log), "--embeddings", str(embeddings), "--out", str(other), "--max-epochs", "2"]
    assert main([*fit, "--quiet", "--method", "naive", "--seed", "5"]) == 0
    score = ["score", str(run), str(log), "--embeddings", str(embeddings), "--quiet"]
    assert main([*score, "--out", str(tmp_path / "before.jsonl")]) == 0
    # The other run's weights have the same shapes: they load, and would score without a word.
    weights = run / "model" / "weights.safetensors"
    weights.write_bytes((other / "model" / "weights.safetensors").read_bytes())
    capsys.readouterr()
    code = main([*score, "--out", str(tmp_path / "after.jsonl")])
    error = capsys.readouterr().err
    assert code == 2 and "Traceback" not in error
    assert "its weight files are not those the fit wrote (changed: model/weights.safetensors)" in error
    assert not (tmp_path / "after.jsonl").exists()
    report = [
        "report",
        str(run),
        "--log",
        str(log),
        "--embeddings",
        str(embeddings),
        "--out",
        str(tmp_path / "r"),
    ]
    for command in (report, ["export", str(run), "--out", str(tmp_path / "hf")]):
        assert main([*command, "--quiet"]) == 2
        assert "model/weights.safetensors" in capsys.readouterr().err
    weights.write_bytes(weights.read_bytes()[:100])  # a torn file is named the same way
    assert main([*score, "--out", str(tmp_path / "torn.jsonl")]) == 2


def _without_digests(run):
    """A run as an older version wrote it: no digests, so the damage reaches the loader."""
    info = json.loads((run / "run.json").read_text())
    del info["digests"]
    (run / "run.json").write_text(json.dumps(info))


@pytest.mark.parametrize(
    "damage, named",
    [
        (lambda run: (run / "run.json").write_text("{not json"), "run.json: not valid JSON"),
        (lambda run: (run / "run.json").write_text("[1, 2]"), "run.json: not a run description"),
        (
            lambda run: _without_digests(run) or (run / "model" / "reward_model.json").write_text("{"),
            "reward_model.json: not valid JSON",
        ),
        (
            lambda run: (
                _without_digests(run) or (run / "model" / "weights.safetensors").write_bytes(b"x" * 64)
            ),
            "the saved reward model does not load (SafetensorError",
        ),
    ],
)
def test_a_damaged_run_file_is_named_not_a_traceback(tmp_path, capsys, damage, named):
    log, embeddings, run = _run_with_embeddings(tmp_path)
    damage(run)
    capsys.readouterr()
    trusted = ["--trust-unverified-run"]  # so that a run without digests reaches its loaders
    code = main(["score", str(run), str(log), "--embeddings", str(embeddings), "--quiet", *trusted])
    error = capsys.readouterr().err
    assert code == 2 and named in error and "Traceback" not in error


def test_a_run_refuses_an_encoder_whose_weights_changed_since_the_fit(tmp_path, capsys, tiny_decoder_factory):
    model = tiny_decoder_factory(tmp_path / "decoder", "llama", seed=0)
    rows = [{"prompt": f"question {i % 4}", "response": f"the answer {'is long ' * (i % 5)}",
             "action": i % 3 == 0} for i in range(40)]  # fmt: skip
    log = write_records(tmp_path / "log.jsonl", rows)
    run = tmp_path / "run"
    common = ["--cache-dir", str(tmp_path / "cache"), "--quiet"]
    fit = [
        "fit",
        str(log),
        "--encoder",
        str(model),
        "--out",
        str(run),
        "--max-epochs",
        "2",
        "--method",
        "naive",
    ]
    assert main([*fit, *common]) == 0
    assert main(["score", str(run), str(log), "--out", str(tmp_path / "ok.jsonl"), *common]) == 0
    # The directory the run names now holds another model of the same architecture and width.
    tiny_decoder_factory(model, "llama", seed=1)
    capsys.readouterr()
    code = main(["score", str(run), str(log), "--out", str(tmp_path / "wrong.jsonl"), *common])
    error = capsys.readouterr().err
    assert code == 2 and "was fit on another encoder" in error and "fingerprint" in error
    assert "its weights changed since the fit" in error and not (tmp_path / "wrong.jsonl").exists()
    assert main(["export", str(run), "--out", str(tmp_path / "hf"), "--quiet"]) == 2
    assert "its weights changed since the fit" in capsys.readouterr().err


# ---------------------------------------------------------------- CSV quotes, tiny logs


def test_a_csv_quote_that_never_closes_is_named_by_the_row_that_opened_it(tmp_path, capsys):
    rows = _rows(40)
    rows[4]["response"] = '"opens a quote, never closes it'
    rows[20]["response"] = '"a quoted, proper response"'  # where a lenient reader would close it
    (tmp_path / "log.csv").write_text(_csv_text(rows))
    with pytest.raises(ValueError) as error:
        read_log(tmp_path / "log.csv", LogSchema())
    assert "log.csv: row 5 (line 6): not valid CSV" in str(error.value)
    assert "opens a quote that does not close where a field ends" in str(error.value)
    del rows[20]  # and when no later quote closes it, the file ends inside the quote
    (tmp_path / "end.csv").write_text(_csv_text(rows))
    code = main(["embed", str(tmp_path / "end.csv"), "--out", str(tmp_path / "end.npy"), "--quiet"])
    message = capsys.readouterr().err
    assert code == 2 and "end.csv: row 5 (line 6)" in message and not (tmp_path / "end.npy").exists()
    rows[4]["response"] = '"a quoted response, with its comma and a ""quote"""'
    (tmp_path / "fine.csv").write_text(_csv_text(rows))
    log = read_log(tmp_path / "fine.csv", LogSchema())
    assert len(log) == 39 and log.responses[4] == 'a quoted response, with its comma and a "quote"'


@pytest.mark.parametrize("rows", [2, 12])
def test_a_training_split_with_one_class_is_refused(tmp_path, capsys, rows):
    rng = np.random.default_rng(0)
    log = tmp_path / "log.jsonl"
    # One acted row: wherever the split puts it, one side has a single class; with 2 rows the
    # held-out row is the only acted one under the default seed.
    records = [{"prompt": f"p{i}", "response": f"r{i}", "action": 0} for i in range(rows)]
    from pyro_irm.data.feedback import split_indices
    from pyro_irm.inference.config import TrainConfig

    _, held_out = split_indices(rows, TrainConfig().validation_fraction, TrainConfig().seed)
    records[int(held_out[0])]["action"] = 1
    write_records(log, records)
    np.save(tmp_path / "e.npy", rng.normal(size=(rows, 4)).astype(np.float32))
    out = tmp_path / "run"
    fit = ["fit", str(log), "--embeddings", str(tmp_path / "e.npy"), "--out", str(out), "--max-epochs", "2"]
    code = main([*fit, "--quiet"])
    error = capsys.readouterr().err
    assert code == 2 and "training rows all have the same action" in error and not out.exists()
    assert "held out to choose the epoch" in error and "--validation-fraction 0" in error
    assert main([*fit, "--quiet", "--validation-fraction", "0"]) == 0


class _Payload:
    """A pickle that runs code when loaded: it would create ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_a_crafted_pickle_in_a_checkpoint_or_an_encoder_is_refused_never_run(
    tmp_path, capsys, tiny_decoder_factory
):
    import pickle

    marker = tmp_path / "the-pickle-ran"
    log, embeddings, _ = _run_with_embeddings(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    crafted = pickle.dumps({"state": _Payload(marker)}, protocol=2)
    (tmp_path / "checkpoints" / "checkpoint.pt").write_bytes(crafted)
    fit = [
        "fit",
        str(log),
        "--embeddings",
        str(embeddings),
        "--out",
        str(tmp_path / "r"),
        "--max-epochs",
        "2",
    ]
    code = main([*fit, "--method", "naive", "--checkpoint-dir", str(tmp_path / "checkpoints"), "--quiet"])
    error = capsys.readouterr().err
    assert code == 2 and "checkpoint.pt: not a readable checkpoint (UnpicklingError" in error
    encoder = tiny_decoder_factory(tmp_path / "encoder", "llama")
    for weights in encoder.glob("*.safetensors"):
        weights.unlink()
    (encoder / "pytorch_model.bin").write_bytes(pickle.dumps({"weight": _Payload(marker)}, protocol=2))
    code = main(["embed", str(log), "--encoder", str(encoder), "--out", str(tmp_path / "e.npy"), "--quiet"])
    error = capsys.readouterr().err
    assert code == 2 and "its weights are not a plain tensor file (UnpicklingError" in error
    assert "Traceback" not in error and "weights_only` set to `False`" not in error
    assert not marker.exists() and not (tmp_path / "e.npy").exists()


# ---------------------------------------------------------------- a run directory is data


def _edit_saved_model(run, edit, digests: str):
    """Edit ``run``'s model/reward_model.json with ``edit(meta)``; then its digests in run.json are
    recomputed (``"recomputed"``: what an attacker does) or removed (``"removed"``)."""
    from pyro_irm.runs import file_digests

    path = run / "model" / "reward_model.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))
    info = json.loads((run / "run.json").read_text())
    if digests == "recomputed":
        info["digests"] = file_digests(run)
    else:
        info.pop("digests", None)
    (run / "run.json").write_text(json.dumps(info))


PLANTED = """
import pathlib
pathlib.Path({marker!r}).write_text("imported")


class Thing:
    def __init__(self, *args, **kwargs):
        pathlib.Path({marker!r}).write_text("built")
"""


@pytest.mark.parametrize("digests", ["recomputed", "removed"])
def test_a_class_path_edited_into_a_run_never_runs(tmp_path, capsys, monkeypatch, digests):
    log, embeddings, run = _run_with_embeddings(tmp_path, method="implicitrm")  # every part saved
    marker = tmp_path / "ran"
    (tmp_path / "planted_module.py").write_text(PLANTED.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path))
    score = [
        "score",
        str(run),
        str(log),
        "--embeddings",
        str(embeddings),
        "--quiet",
        "--trust-unverified-run",
    ]
    shell = ["sh", "-c", f"echo ran > {marker}"]
    edits = [
        # a command through the standard library's process class, with its arguments as "settings"
        ("subprocess:Popen", lambda meta: meta.update(propensity={"class": "subprocess:Popen",
                                                                   "settings": {"args": shell}})),
        ("subprocess:Popen", lambda meta: meta.update(model_class="subprocess:Popen", model_settings={})),
        # a module on the path that runs code when imported, never named by the user
        ("planted_module:Thing", lambda meta: meta.update(model_class="planted_module:Thing")),
        ("planted_module:Thing", lambda meta: meta.update(channel_types=["planted_module:Thing"])),
    ]  # fmt: skip
    for named, edit in edits:
        _edit_saved_model(run, edit, digests)
        capsys.readouterr()
        out = tmp_path / "scores.jsonl"
        assert main([*score, "--out", str(out)]) == 2
        error = capsys.readouterr().err
        assert named in error and "reward_model.json" in error and "Traceback" not in error, error
        assert "which nobody trusted, so it was not imported" in error or "is not a" in error
        assert not marker.exists() and not out.exists()
        assert "planted_module" not in sys.modules
    time.sleep(1.0)  # a process Popen started would have written by now
    assert not marker.exists()
    # A pyro_irm class of another base is never built either.
    _edit_saved_model(run, lambda meta: meta.update(model_class="pyro_irm.runs:Run"), digests)
    assert main([*score, "--out", str(tmp_path / "s.jsonl")]) == 2
    assert (
        "component pyro_irm.runs:Run is not a pyro_irm.models.base.FeedbackModel" in capsys.readouterr().err
    )


def test_a_run_without_digests_is_refused_unless_trusted(tmp_path, capsys):
    log, embeddings, run = _run_with_embeddings(tmp_path)
    _without_digests(run)
    score = ["score", str(run), str(log), "--embeddings", str(embeddings), "--quiet"]
    capsys.readouterr()
    assert main([*score, "--out", str(tmp_path / "refused.jsonl")]) == 2
    error = capsys.readouterr().err
    assert "records no digests of its weights" in error and "--trust-unverified-run" in error
    assert not (tmp_path / "refused.jsonl").exists()
    assert main([*score, "--out", str(tmp_path / "trusted.jsonl"), "--trust-unverified-run"]) == 0
    assert len((tmp_path / "trusted.jsonl").read_text().splitlines()) == 60


def test_a_plugin_is_a_module_or_a_file_and_a_broken_entry_point_is_skipped(tmp_path, capsys, monkeypatch):
    from importlib import metadata

    from pyro_irm.cli.common import import_plugins
    from pyro_irm.models.components import is_trusted_module

    plugin = tmp_path / "file_plugin_module.py"
    plugin.write_text("VALUE = 3\n")
    try:
        assert import_plugins(["--plugin", str(plugin)]) == ["file_plugin_module"]
        assert sys.modules["file_plugin_module"].VALUE == 3 and is_trusted_module("file_plugin_module")
    finally:
        sys.modules.pop("file_plugin_module", None)
    (tmp_path / "broken.py").write_text("raise RuntimeError('half written')\n")
    for name, named in ((str(tmp_path / "broken.py"), "RuntimeError: half written"),
                        (str(tmp_path / "absent.py"), "no such file")):  # fmt: skip
        assert main(["--plugin", name, "fit", "--help"]) == 2
        assert named in capsys.readouterr().err
    broken = metadata.EntryPoint("broken", "no_such_plugin_module", "pyro_irm.plugins")
    monkeypatch.setattr(metadata, "entry_points", lambda group=None: [broken] if group else [])
    with pytest.warns(UserWarning, match="installed plugin broken .* does not import and is skipped"):
        assert import_plugins([]) == []
    assert not is_trusted_module("no_such_plugin_module")


# ---------------------------------------------------------------- outputs never eat inputs


def _files_under(directory):
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*"))


def test_a_fit_into_the_directory_holding_its_inputs_is_refused_before_the_fit(tmp_path, capsys):
    log, embeddings, run = _run_with_embeddings(tmp_path)
    inside = run / "inputs"  # a previous run's directory that now also holds the log and embeddings
    inside.mkdir()
    (inside / "log.jsonl").write_bytes(log.read_bytes())
    np.save(inside / "log.npy", np.load(embeddings))
    before = _files_under(run)
    capsys.readouterr()
    fit = ["fit", str(inside / "log.jsonl"), "--embeddings", str(inside / "log.npy"), "--out", str(run)]
    assert main([*fit, "--quiet", "--method", "naive", "--max-epochs", "2"]) == 2
    error = capsys.readouterr().err
    assert "holds the log" in error and "replaced whole" in error and "Traceback" not in error
    assert _files_under(run) == before  # both inputs, and the run, as they were


@pytest.mark.parametrize("situation", ["link", "below-a-file", "directory", "fifo"])
def test_an_output_path_that_cannot_be_written_in_place_is_refused_before_the_work(
    tmp_path, capsys, situation
):
    import os

    log, embeddings, run = _run_with_embeddings(tmp_path)
    if situation == "link":
        out = tmp_path / "latest"
        out.symlink_to(run, target_is_directory=True)
    elif situation == "below-a-file":
        out = tmp_path / "notes.txt" / "scores"
        (tmp_path / "notes.txt").write_text("mine")
    elif situation == "directory":
        out = tmp_path / "a-directory"
        out.mkdir()
    else:
        out = tmp_path / "pipe"
        os.mkfifo(out)
    before = _files_under(tmp_path)
    capsys.readouterr()
    commands = {
        "score": ["score", str(run), str(log), "--embeddings", str(embeddings), "--out", str(out)],
        "embed": ["embed", str(log), "--out", str(out) + ".npy"],
        "fit": ["fit", str(log), "--embeddings", str(embeddings), "--out", str(out), "--max-epochs", "1"],
        "report": ["report", str(run), "--log", str(log), "--embeddings", str(embeddings), "--out", str(out)],
    }
    for name, command in commands.items():
        if situation == "directory" and name in ("fit", "report"):
            continue  # an empty directory is a fine output directory
        if situation in ("link", "fifo", "directory") and name == "embed":
            continue  # its output is OUT.npy, another path
        code = main([*command, "--quiet"])
        error = capsys.readouterr().err
        assert code == 2 and "Traceback" not in error, (name, error)
        assert str(out).split("/")[-1] in error, (name, error)
        assert _files_under(tmp_path) == before, name  # nothing written, no temporary left
    assert situation != "link" or (out.is_symlink() and (run / "run.json").is_file())


def test_embed_names_its_suffix_and_report_stays_out_of_the_runs_weights(tmp_path, capsys):
    log, embeddings, run = _run_with_embeddings(tmp_path)
    capsys.readouterr()
    assert main(["embed", str(log), "--out", str(tmp_path / "vectors"), "--quiet"]) == 2
    assert "name it" in capsys.readouterr().err and not (tmp_path / "vectors.npy").exists()
    report = ["report", str(run), "--log", str(log), "--embeddings", str(embeddings), "--quiet"]
    assert main([*report, "--out", str(run / "model" / "report")]) == 2
    assert "inside the run directory's weights" in capsys.readouterr().err
    assert (
        main(
            ["score", str(run), str(log), "--embeddings", str(embeddings), "--out", str(tmp_path / "s.jsonl")]
        )
        == 0
    )


# ---------------------------------------------------------------- no silent wrong reading


def test_yes_no_words_never_take_empty_cells_or_numbers_and_a_column_has_one_role(tmp_path, capsys):
    rows = [{"prompt": f"p{i}", "response": f"r{i}", "action": i % 2, "user": f"u{i % 3}"} for i in range(20)]
    log = write_records(tmp_path / "log.jsonl", rows)
    np.save(tmp_path / "log.npy", np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32))
    fit = [
        "fit",
        str(log),
        "--embeddings",
        str(tmp_path / "log.npy"),
        "--out",
        str(tmp_path / "run"),
        "--quiet",
    ]
    for flags, named in (
        (["--false-values", ""], "an empty cell (or nothing) means a missing value"),
        (["--true-values", "null"], "an empty cell (or null) means a missing value"),
        (["--true-values", "0", "--false-values", "1"], "a number is read as that number in every file type"),
        (["--action-col", "user", "--user-col", "user"], "'user' is an action column and --user-col"),
        (["--label-col", "action"], "'action' is an action column and --label-col"),
    ):
        assert main([*fit, *flags]) == 2, flags
        error = capsys.readouterr().err
        assert named in error and "Traceback" not in error, (flags, error)
        assert not (tmp_path / "run").exists()
    assert main([*fit, "--true-values", "1", "--true-values", "yes", "--max-epochs", "1"]) == 0


def test_a_reading_that_gives_every_row_one_embedding_is_refused_at_embed_and_fit(
    tmp_path, capsys, tiny_decoders
):
    rows = [
        {"prompt": f"question {i}", "response": f"answer {'long ' * i}", "action": i % 2} for i in range(12)
    ]
    log = write_records(tmp_path / "log.jsonl", rows)
    # A decoder read at its first token (the template's start) sees the same token on every row.
    reading = ["--encoder", str(tiny_decoders["llama"]), "--encoder-pooling", "cls", "--quiet"]
    assert main(["embed", str(log), "--out", str(tmp_path / "e.npy"), *reading]) == 2
    error = capsys.readouterr().err
    assert "every row's embedding from the encoder" in error and "pooling 'cls'" in error
    assert "--encoder-pooling" in error and not (tmp_path / "e.npy").exists()
    assert main(["fit", str(log), "--out", str(tmp_path / "run"), "--max-epochs", "1", *reading]) == 2
    assert "pooling 'cls'" in capsys.readouterr().err and not (tmp_path / "run").exists()
    np.save(tmp_path / "same.npy", np.ones((12, 4), dtype=np.float32))
    assert main(["fit", str(log), "--embeddings", str(tmp_path / "same.npy"), "--out", str(tmp_path / "run"),
                 "--quiet"]) == 2  # fmt: skip
    error = capsys.readouterr().err
    assert f"every row's embedding from {tmp_path / 'same.npy'} is the same" in error
    assert main(["embed", str(log), "--out", str(tmp_path / "e.npy"), *reading[:2], "--quiet"]) == 0


def test_the_run_records_the_digest_of_the_bytes_the_fit_read(tmp_path, capsys, monkeypatch):
    import hashlib

    from pyro_irm.data import logs as logs_module

    log, embeddings, run = _run_with_embeddings(tmp_path)
    read = hashlib.sha256(log.read_bytes()).hexdigest()
    assert json.loads((run / "run.json").read_text())["log_sha256"] == read
    # A writer appends while the log is being read: the read is refused, not recorded as the new bytes.
    real = logs_module.iter_records

    def appending(source, split):
        yield from real(source, split)
        with open(source, "a") as stream:
            stream.write(json.dumps({"prompt": "p", "response": "late", "action": 1}) + "\n")

    monkeypatch.setattr(logs_module, "iter_records", appending)
    capsys.readouterr()
    fit = ["fit", str(log), "--embeddings", str(embeddings), "--out", str(tmp_path / "r2"), "--quiet"]
    assert main([*fit, "--method", "naive"]) == 2
    assert "changed while it was read" in capsys.readouterr().err and not (tmp_path / "r2").exists()


@pytest.mark.parametrize("damage", ["no weights", "config not JSON", "truncated weights", "sidecar a list"])
def test_a_damaged_encoder_directory_or_sidecar_is_named_not_a_traceback(
    tmp_path, capsys, tiny_decoders, damage
):
    import shutil

    rows = [
        {"prompt": f"question {i}", "response": f"answer {'long ' * i}", "action": i % 2} for i in range(6)
    ]
    log = write_records(tmp_path / "log.jsonl", rows)
    encoder = tmp_path / "encoder"
    shutil.copytree(tiny_decoders["llama"], encoder)
    weights = encoder / "model.safetensors"
    if damage == "no weights":
        weights.unlink()
    elif damage == "config not JSON":
        (encoder / "config.json").write_text("{not json")
    elif damage == "truncated weights":
        weights.write_bytes(weights.read_bytes()[:1000])
    command = ["embed", str(log), "--encoder", str(encoder), "--no-cache", "--quiet"]
    if damage == "sidecar a list":
        assert main([*command, "--out", str(tmp_path / "e.npy")]) == 0
        (tmp_path / "e.json").write_text("[1, 2]")
        command = [
            "fit",
            str(log),
            "--embeddings",
            str(tmp_path / "e.npy"),
            "--out",
            str(tmp_path / "run"),
            "--quiet",
        ]
        named = "e.json: holds a JSON list, not the object"
    else:
        command += ["--out", str(tmp_path / "e.npy")]
        named = {"no weights": "its weights in", "config not JSON": "its config.json in",
                 "truncated weights": "its weights in"}[damage]  # fmt: skip
    capsys.readouterr()
    assert main(command) == 2
    error = capsys.readouterr().err
    assert named in error and "Traceback" not in error, error


def test_a_chat_template_that_refuses_a_row_names_the_row(tmp_path, capsys, tiny_decoders):
    import shutil

    encoder = tmp_path / "encoder"
    shutil.copytree(tiny_decoders["llama"], encoder)
    strict = ("{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
              "{{ raise_exception('Conversation roles must alternate user/assistant') }}{% endif %}"
              "{{ m['content'] }} {% endfor %}")  # fmt: skip
    for stale in encoder.glob("chat_template.*"):
        stale.unlink()
    settings = json.loads((encoder / "tokenizer_config.json").read_text())
    settings["chat_template"] = strict
    (encoder / "tokenizer_config.json").write_text(json.dumps(settings))
    rows = [{"prompt": f"question {i}", "response": "an answer", "action": i % 2} for i in range(5)]
    rows.append({"prompt": [{"role": "assistant", "content": "out of turn"}], "response": "x", "action": 1})
    log = write_records(tmp_path / "log.jsonl", rows)
    capsys.readouterr()
    command = ["embed", str(log), "--encoder", str(encoder), "--encoder-text-mode", "chat", "--no-cache"]
    assert main([*command, "--out", str(tmp_path / "e.npy"), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "its chat template refuses a row whose turns are ['assistant', 'assistant']" in error
    assert "'out of turn'" in error and "roles must alternate" in error and "Traceback" not in error


def test_an_extreme_count_is_named_with_its_row_and_column(tmp_path):
    rng = np.random.default_rng(0)
    rows = [{"prompt": f"p{i}", "response": f"r{i}", "plus_one": int(rng.poisson(2)),
             "dwell": float(rng.gamma(2, 10))} for i in range(200)]  # fmt: skip
    rows[57]["plus_one"] = 1e30
    path = write_records(tmp_path / "log.jsonl", rows)
    schema = LogSchema(actions=(), count_actions=("plus_one",), continuous_actions=("dwell",))
    with pytest.warns(
        UserWarning, match=r"1 value\(s\) of count column 'plus_one' .* largest 1e\+30 at row 58"
    ):
        read_log(path, schema)
    rows[57]["plus_one"] = 9  # a large tally among small ones, not an outlier
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_log(write_records(tmp_path / "ok.jsonl", rows), schema)


def test_evaluating_runs_in_either_order_gives_each_run_the_same_figures(tmp_path, capsys):
    import json

    rng = np.random.default_rng(1)
    rows = [
        {"prompt": f"p{i // 2}", "response": f"r{i}", "action": int(rng.random() < 0.4),
         "label": int(rng.random() < 0.5), "grade": int(rng.random() < 0.5)}
        for i in range(80)
    ]  # fmt: skip
    write_records(tmp_path / "log.jsonl", rows)
    np.save(tmp_path / "log.npy", rng.normal(size=(80, 5)).astype(np.float32))
    common = ["--embeddings", str(tmp_path / "log.npy"), "--method", "naive", "--max-epochs", "2", "--quiet"]
    assert main(["fit", str(tmp_path / "log.jsonl"), "--out", str(tmp_path / "a"), *common]) == 0
    assert main(["fit", str(tmp_path / "log.jsonl"), "--out", str(tmp_path / "b"), "--label-col", "grade",
                 *common]) == 0  # fmt: skip
    figures = {}
    for order in (("a", "b"), ("b", "a")):
        out = tmp_path / f"{''.join(order)}.json"
        assert main(["evaluate", *(str(tmp_path / r) for r in order), "--log", str(tmp_path / "log.jsonl"),
                     "--embeddings", str(tmp_path / "log.npy"), "--resamples", "20", "--json", str(out),
                     "--quiet"]) == 0  # fmt: skip
        figures[order] = json.loads(out.read_text())
    assert figures[("a", "b")] == figures[("b", "a")]  # each run against its own label column
    assert figures[("a", "b")]["a"]["auc"] != figures[("a", "b")]["b"]["auc"]


def test_erasing_a_constant_context_column_erases_no_coordinate():
    import torch

    from pyro_irm import SimulationConfig, simulate
    from pyro_irm.inference.remedies import context_erasure

    data = simulate(SimulationConfig(num_rows=400, embedding_dim=6, seed=2))
    varying = torch.randn(len(data), 1) + data.embeddings[:, :1]
    constant = torch.ones(len(data), 1)
    projection = context_erasure(replace_context(data, torch.cat([constant, varying], 1)), torch.arange(400))
    kept = torch.linalg.matrix_rank(projection).item()
    assert kept == 5  # one direction (the varying column's) erased, not also an axis for the constant
    only_constant = context_erasure(replace_context(data, constant), torch.arange(400))
    assert torch.allclose(only_constant, torch.eye(6))


def replace_context(data, context):
    from dataclasses import replace

    return replace(data, context=context, context_names=tuple(f"c{k}" for k in range(context.shape[1])))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_worker_dies_with_its_launcher_when_the_launcher_is_killed(tmp_path):
    import os
    import signal
    import subprocess
    import time

    marker = tmp_path / "worker.pid"
    worker = (
        "import os, sys, time; from pyro_irm.device import die_with_parent; die_with_parent(); "
        f"open({str(marker)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    )
    launcher = (
        f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {worker!r}]); time.sleep(60)"
    )
    parent = subprocess.Popen([sys.executable, "-c", launcher])
    deadline = time.monotonic() + 30
    while not marker.exists() or not marker.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    child = int(marker.read_text())
    parent.send_signal(signal.SIGKILL)  # no chance to clean up
    parent.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return  # the worker went with its launcher
        with open(f"/proc/{child}/stat") as stat:
            if stat.read().split()[2] == "Z":  # exited, waiting to be reaped by init
                return
        time.sleep(0.05)
    os.kill(child, signal.SIGKILL)
    raise AssertionError("the worker outlived its killed launcher")


def test_scoring_needs_no_context_column_but_groups_do(tmp_path, capsys):
    """The reward never reads the context: ``score`` reads a log without the run's context column;
    ``score --groups`` (the engagement side needs it) names the missing column."""
    rng = np.random.default_rng(1)
    rows = [{"prompt": f"p{i // 2}", "response": f"r{i}", "action": int(rng.random() < 0.4),
             "position": int(rng.integers(1, 5))} for i in range(80)]  # fmt: skip
    write_records(tmp_path / "log.jsonl", rows)
    write_records(tmp_path / "bare.jsonl", [{k: v for k, v in r.items() if k != "position"} for r in rows])
    embeddings = tmp_path / "log.npy"
    np.save(embeddings, rng.normal(size=(len(rows), 6)).astype(np.float32))
    run = tmp_path / "run"
    assert main(["fit", str(tmp_path / "log.jsonl"), "--embeddings", str(embeddings), "--out", str(run),
                 "--context-col", "position", "--max-epochs", "2", "--quiet"]) == 0  # fmt: skip
    scored = {}
    for name in ("log", "bare"):
        out = tmp_path / f"{name}.scores.jsonl"
        code = main(["score", str(run), str(tmp_path / f"{name}.jsonl"), "--embeddings", str(embeddings),
                     "--out", str(out), "--quiet"])  # fmt: skip
        assert code == 0, capsys.readouterr().err
        scored[name] = [json.loads(line)["reward"] for line in out.read_text().splitlines()]
    assert scored["bare"] == scored["log"]
    capsys.readouterr()
    code = main(["score", str(run), str(tmp_path / "bare.jsonl"), "--embeddings", str(embeddings),
                 "--groups", "--out", str(tmp_path / "groups.jsonl"), "--quiet"])  # fmt: skip
    assert code == 2 and "position" in capsys.readouterr().err
    assert not (tmp_path / "groups.jsonl").exists()
