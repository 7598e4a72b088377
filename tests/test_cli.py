import contextlib
import csv
import json
import re

import numpy as np
import pytest

from pyro_irm import IdentifiabilityWarning
from pyro_irm.analysis.metrics import auc
from pyro_irm.cli import main

ENCODER_FLAGS = ["--encoder-max-length", "64", "--encoder-batch-size", "16", "--encoder-device", "cpu"]


def _printed_table(text: str) -> dict[str, list[float]]:
    """The rows of a printed metrics table: method name -> its numbers."""
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) > 1 and cells[0] in ("implicitrm", "naive", "oracle"):
            rows[cells[0]] = [float(c) if c != "—" else None for c in cells[1:]]
    return rows


def test_demo_prints_and_writes_the_numbers_the_library_computes(tmp_path, capsys):
    from pyro_irm.demo import DemoConfig, run_demo

    path = tmp_path / "out" / "demo.json"
    code = main(
        ["demo", "--rows", "3000", "--test-rows", "2000", "--epochs", "5", "--quiet", "--json", str(path)]
    )
    assert code == 0
    written = json.loads(path.read_text())
    library = run_demo(DemoConfig(train_rows=3000, test_rows=2000, max_epochs=5, progress=False))
    assert written.keys() == library.keys()
    for method in library:  # the same seeds give the same fits
        assert written[method] == pytest.approx(library[method]), method
    printed = _printed_table(capsys.readouterr().out)
    columns = ("auc", "mae", "ece", "group_accuracy", "no_action_group_accuracy")
    for method, numbers in printed.items():
        for key, value in zip(columns, numbers, strict=True):
            if value is None:
                assert key not in written[method]
            else:
                assert value == pytest.approx(written[method][key], abs=5.1e-4), (method, key)
    assert set(printed) == {"implicitrm", "naive", "oracle"}
    assert "group_accuracy" not in written["oracle"]
    # Numbers a constant reward cannot meet (its AUC is 0.5): the demo's world is learnable.
    assert (
        written["oracle"]["auc"] > 0.85
        and written["implicitrm"]["auc"] > 0.75
        and written["naive"]["auc"] > 0.7
    )


@pytest.mark.slow
def test_the_demo_keeps_the_margin_the_readme_shows(tmp_path):
    """README: ImplicitRM 0.938 AUC against naive's 0.870 (and the oracle's 0.945) on the default demo."""
    path = tmp_path / "demo.json"
    assert main(["demo", "--quiet", "--json", str(path)]) == 0
    results = json.loads(path.read_text())
    assert results["implicitrm"]["auc"] > results["naive"]["auc"] + 0.05, results
    assert results["implicitrm"]["auc"] > 0.92 and results["oracle"]["auc"] > results["implicitrm"]["auc"]
    assert results["implicitrm"]["mae"] < results["naive"]["mae"] - 0.1


def test_bad_arguments_exit_nonzero(capsys):
    with pytest.raises(SystemExit) as error:
        main(["demo", "--inference", "magic"])
    assert error.value.code == 2


@pytest.mark.parametrize(
    "command", ["demo", "simulate", "embed", "fit", "score", "evaluate", "benchmark", "report"]
)
def test_every_command_explains_itself(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    assert "usage: pyro-irm " + command in capsys.readouterr().out


def _simulate_real_text(tmp_path, ultrafeedback_rows, name, seed):
    """A small real-text log: the first pairs of the UltraFeedback sample with simulated actions."""
    out = tmp_path / name
    source = ultrafeedback_rows.report.source
    code = main(
        ["simulate", "--dataset", "ultrafeedback", "--data-file", source, "--limit", "40"]
        + ["--seed", str(seed), "--out", str(out), "--quiet"]
    )
    assert code == 0
    return out


def test_simulate_embed_fit_score_evaluate_on_real_text(tmp_path, ultrafeedback_rows, capsys):
    train = _simulate_real_text(tmp_path, ultrafeedback_rows, "train.jsonl", seed=0)
    cache = ["--cache-dir", str(tmp_path / "cache")]
    assert (
        main(["embed", str(train), "--out", str(tmp_path / "train.npy"), "--quiet", *cache, *ENCODER_FLAGS])
        == 0
    )
    embeddings = np.load(tmp_path / "train.npy")
    assert embeddings.shape == (80, 384)
    assert "80 rows encoded" in capsys.readouterr().out
    for method in ("implicitrm", "naive"):
        # The paper's alpha-power setting has no context column: ImplicitRM says what that means.
        expected = (
            pytest.warns(IdentifiabilityWarning) if method == "implicitrm" else contextlib.nullcontext()
        )
        with expected:
            code = main(
                ["fit", str(train), "--method", method, "--out", str(tmp_path / method), "--max-epochs", "3"]
                + ["--quiet", *cache, *ENCODER_FLAGS]  # encodes through the cache: no new rows
            )
        assert code == 0
        run = tmp_path / method
        assert {"model", "run.json", "metrics.json", "elbo.png"} <= {p.name for p in run.iterdir()}
        assert (run / "elbo.png").read_bytes()[:4] == b"\x89PNG"
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["fit"]["epochs"] <= 3 and 0 <= metrics["training_log_labels"]["auc"] <= 1
    capsys.readouterr()
    assert (
        main(["score", str(tmp_path / "implicitrm"), str(train), "--out", str(tmp_path / "s.csv"), *cache])
        == 0
    )
    lines = (tmp_path / "s.csv").read_text().splitlines()
    assert lines[0] == "row,prompt_id,reward,preference_probability" and len(lines) == 81
    assert main(["score", str(tmp_path / "naive"), str(train), "--quiet", *cache]) == 0
    scored = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(scored) == 80 and 0 < scored[0]["preference_probability"] < 1
    # The fits learned the log: a constant reward (AUC 0.5) would fail here.
    records = [json.loads(line) for line in train.read_text().splitlines()]
    naive = [r["reward"] for r in scored]
    irm = [float(r["reward"]) for r in csv.DictReader((tmp_path / "s.csv").read_text().splitlines())]
    for rewards in (naive, irm):
        assert auc([r["action"] for r in records], rewards) > 0.75
        assert auc([r["true_preference"] for r in records], rewards) > 0.65
    test = _simulate_real_text(tmp_path, ultrafeedback_rows, "test.jsonl", seed=1)
    capsys.readouterr()
    code = main(
        ["evaluate", str(tmp_path / "implicitrm"), str(tmp_path / "naive"), "--log", str(test)]
        + ["--json", str(tmp_path / "eval.json"), "--quiet", *cache]
    )
    assert code == 0
    table = capsys.readouterr().out
    assert "implicitrm" in table and "naive" in table and "pairwise acc." in table
    results = json.loads((tmp_path / "eval.json").read_text())
    assert results["naive"]["rows"] == 80 and 0 <= results["implicitrm"]["auc"] <= 1
    assert results["naive"]["auc"] > 0.65 and results["implicitrm"]["auc"] > 0.65  # held-out rows
    assert main(["report", str(tmp_path / "implicitrm"), "--quiet", *cache]) == 0
    report = tmp_path / "implicitrm" / "report"
    text = (report / "report.md").read_text()
    assert "## Posterior groups against the simulated truth" in text and "| engaged_positive " in text
    assert "![training curve](../elbo.png)" in text and "## Against the explicit labels" in text
    # each label metric stands beside what it is computed from, and few rows say so
    assert re.search(r"\| pairwise_accuracy \| +[0-9.]+ \([1-9][0-9,]* pairs in [1-9][0-9,]* prompts", text)
    assert re.search(r"\| auc +\| +[0-9.]+ \([0-9,]+ labelled rows(; few, so read it loosely)?\)", text)
    for png in ("reward_by_action.png", "group_confusion.png", "group_reliability.png"):
        assert (report / png).read_bytes()[:4] == b"\x89PNG"


def test_a_malformed_log_exits_2_naming_row_and_field(tmp_path, capsys):
    log = tmp_path / "log.jsonl"
    log.write_text(
        json.dumps({"prompt": "p", "response": "r", "action": 1}) + "\n" + json.dumps({"prompt": "p"}) + "\n"
    )
    code = main(["fit", str(log), "--out", str(tmp_path / "run"), "--quiet"])
    assert code == 2
    error = capsys.readouterr().err
    assert "row 2, field 'response': is missing" in error and str(log) in error


def test_an_observational_log_fits_every_weighted_baseline(tmp_path, ultrafeedback_rows, capsys):
    """CausalRM's setting end to end: the simulated log carries `observed`, the fit reads it."""
    log = tmp_path / "observational.jsonl"
    source = ultrafeedback_rows.report.source
    code = main(
        ["simulate", "--dataset", "ultrafeedback", "--data-file", source, "--limit", "40"]
        + ["--setting", "observational", "--observation-rate", "0.4", "--eps1", "0.2", "--eps0", "0.1"]
        + ["--out", str(log), "--quiet"]
    )
    assert code == 0
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert all(r["action"] <= r["observed"] for r in records)
    cache = ["--cache-dir", str(tmp_path / "cache")]
    for method in ("dr", "causalrm", "implicitrm"):
        code = main(
            ["fit", str(log), "--method", method, "--observed-col", "observed", "--max-epochs", "2"]
            + ["--out", str(tmp_path / method), "--quiet", *cache, *ENCODER_FLAGS]
            + (["--bayesian-head", "network"] if method == "implicitrm" else [])
        )
        assert code == 0, capsys.readouterr().err
    assert main(["report", str(tmp_path / "implicitrm"), "--quiet", *cache]) == 0
    text = (tmp_path / "implicitrm" / "report" / "report.md").read_text()
    assert "## Reward uncertainty" in text and "observational log" in text
    scores = tmp_path / "scores.jsonl"
    score = ["score", str(tmp_path / "implicitrm"), str(log), "--interval", "0.9", "--quiet", *cache]
    assert main([*score, "--out", str(scores)]) == 0
    rows = [json.loads(line) for line in scores.read_text().splitlines()]
    assert len(rows) == len(records) and all(r["reward_low"] < r["reward"] < r["reward_high"] for r in rows)
    truth = [r["true_preference"] for r in records]
    for method in ("dr", "causalrm", "implicitrm"):
        out = tmp_path / f"{method}.jsonl"
        assert main(["score", str(tmp_path / method), str(log), "--out", str(out), "--quiet", *cache]) == 0
        rewards = [json.loads(line)["reward"] for line in out.read_text().splitlines()]
        assert auc(truth, rewards) > 0.6, method  # a constant reward has 0.5
    assert main([*score[:1], str(tmp_path / "dr"), *score[2:]]) == 2
    assert "has no Bayesian head" in capsys.readouterr().err
    assert main(["fit", str(log), "--method", "dr", "--out", str(tmp_path / "x"), "--quiet", *cache]) == 2
    assert "needs an observational log" in capsys.readouterr().err


CHATLOG_FLAGS = [
    "--action-col",
    "copied",
    "--action-col",
    "thumbs_up",
    "--negative-action-col",
    "regenerated",
    "--continuous-action-col",
    "dwell_seconds",
    "--user-col",
    "user_id",
    "--context-col",
    "position",
    "--context-col",
    "response_length",
]


@pytest.mark.slow
def test_chatlog_simulate_fit_and_score_groups(tmp_path, ultrafeedback_rows, capsys):
    """A chat log on real text: simulated with several channels, fit with each declared, and each
    scored row's four group probabilities written beside its reward."""
    log = tmp_path / "chat.jsonl"
    source = ultrafeedback_rows.report.source
    simulate = ["simulate", "--dataset", "ultrafeedback", "--data-file", source, "--limit", "40"]
    assert main([*simulate, "--setting", "chatlog", "--chat-label-fraction", "0.25", "--out", str(log)]) == 0
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert {"copied", "thumbs_up", "regenerated", "dwell_seconds", "user_id", "label"} <= records[0].keys()
    assert all(
        r["copied"] + r["thumbs_up"] + r["regenerated"] == 0 for r in records if not r["true_engagement"]
    )
    run = tmp_path / "run"
    code = main(["fit", str(log), "--out", str(run), "--fit-labels", "--max-epochs", "3", "--quiet",
                 *CHATLOG_FLAGS, *ENCODER_FLAGS])  # fmt: skip
    assert code == 0
    info = json.loads((run / "run.json").read_text())
    assert info["train_config"]["fit_labels"] is True
    assert info["users"] == sorted({r["user_id"] for r in records})
    scores = tmp_path / "scores.jsonl"
    assert main(["score", str(run), str(log), "--groups", "--out", str(scores), "--quiet"]) == 0
    rows = [json.loads(line) for line in scores.read_text().splitlines()]
    groups = np.array([[r[g] for g in ("engaged_positive", "silent_positive", "engaged_negative",
                                       "silent_negative")] for r in rows])  # fmt: skip
    np.testing.assert_allclose(groups.sum(1), 1.0, atol=1e-5)
    assert main(["report", str(run), "--quiet"]) == 0
    report = (run / "report" / "report.md").read_text()
    assert "regenerated (negative)" in report and "used in the fit" in report
    acted = np.array([r["copied"] or r["thumbs_up"] or r["regenerated"] for r in records], dtype=bool)
    # A row with any binary action is engaged: its silent groups are (almost) impossible.
    assert (groups[acted][:, [1, 3]].sum(1) < 1e-6).all()


def _schema_fields(*parts: str) -> set[str]:
    """LogSchema fields a command does not read: those of the parts it leaves out."""
    from dataclasses import fields

    from pyro_irm.data.schema import LogSchema

    return {f.name for f in fields(LogSchema) if f.metadata.get("part") in parts}


def _config_options():
    from pyro_irm.benchmark.config import BenchmarkConfig, ChatLogBenchmarkConfig
    from pyro_irm.cli.benchmark import _SIMULATION_OPTIONS, _TRAIN_SET_PER_FIT
    from pyro_irm.cli.simulate import _FROM_THE_DATA
    from pyro_irm.data.config import ChatLogConfig, SimulationConfig
    from pyro_irm.data.schema import LogSchema
    from pyro_irm.demo import DemoConfig
    from pyro_irm.encoders.config import EncoderConfig
    from pyro_irm.estimators.config import EstimatorConfig
    from pyro_irm.inference.config import FinetuneConfig, HeadConfig, TrainConfig
    from pyro_irm.models.config import ModelConfig

    not_simulated = {f for f in SimulationConfig.__dataclass_fields__ if f not in _SIMULATION_OPTIONS}
    return {  # command -> (configuration class, dest prefix of its options, fields without an option)
        "demo": [(DemoConfig, "demo_", {"progress", "simulation"})],
        "simulate": [(SimulationConfig, "sim_", set(_FROM_THE_DATA)), (ChatLogConfig, "chat_", {"seed"})],
        "embed": [
            (EncoderConfig, "encoder_", set()),
            (LogSchema, "schema_", _schema_fields("actions", "labels")),
        ],
        "fit": [
            (TrainConfig, "train_", {"progress"}),
            (ModelConfig, "model_", set()),
            (EstimatorConfig, "est_", set()),
            (HeadConfig, "head_", {"seed", "progress"}),
            (FinetuneConfig, "finetune_", {"mode"}),
            (EncoderConfig, "encoder_", set()),
            (LogSchema, "schema_", set()),
        ],
        "benchmark": [
            (BenchmarkConfig, "bench_", {"train", "simulation"}),
            (TrainConfig, "train_", set(_TRAIN_SET_PER_FIT)),
            (SimulationConfig, "sim_", not_simulated),
            (ChatLogBenchmarkConfig, "chatbench_", {"seeds"}),
            (EstimatorConfig, "est_", set()),
            (EncoderConfig, "encoder_", set()),
            (LogSchema, "schema_", set()),
        ],
        "score": [(LogSchema, "schema_", _schema_fields("actions", "labels"))],
        "evaluate": [(LogSchema, "schema_", _schema_fields("actions"))],
        "best-of-n": [(LogSchema, "schema_", _schema_fields("actions"))],
    }


@pytest.mark.parametrize(
    "command", ["demo", "simulate", "embed", "fit", "benchmark", "score", "evaluate", "best-of-n"]
)
def test_each_option_is_a_configuration_field_with_the_field_s_own_help(command):
    """The options are generated from the configuration dataclasses: one per field (less those the
    command sets itself), named by its ``dest``, with the help text written on the field."""
    from dataclasses import fields

    from pyro_irm.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    actions = {a.dest: a for a in subparsers.choices[command]._actions}
    for cls, prefix, without in _config_options()[command]:
        expected = {prefix + f.name: f for f in fields(cls) if f.name not in without}
        present = {dest for dest in actions if dest.startswith(prefix)}
        assert present == set(expected), (cls.__name__, present ^ set(expected))
        for dest, field in expected.items():
            assert actions[dest].help.startswith(field.metadata["help"]), (cls.__name__, dest)


def test_global_options_are_accepted_before_or_after_the_command():
    from pyro_irm.cli import build_parser

    parser = build_parser()
    for argv in (["-v", "--quiet", "demo"], ["demo", "-v", "--quiet"], ["-v", "demo", "-q"]):
        args = parser.parse_args(argv)
        assert args.verbose and args.quiet, argv
    args = parser.parse_args(["demo"])
    assert not args.verbose and not args.quiet


@pytest.mark.filterwarnings("ignore::pyro_irm.models.identifiability.IdentifiabilityWarning")
def test_any_registered_kind_is_a_channel_from_the_command_line_and_a_count_fits_alone(tmp_path, capsys):
    from pyro_irm.channels import CHANNEL_KINDS, ChannelKind, register_kind
    from pyro_irm.data.logs import write_records

    rng = np.random.default_rng(0)
    rows = [{"prompt": f"p{i // 2}", "response": f"r{i}", "plus_one": int(rng.poisson(1.5)),
             "stars": int(rng.integers(1, 8)), "rater": int(rng.random() < 0.5)}
            for i in range(120)]  # fmt: skip
    log = write_records(tmp_path / "log.jsonl", rows)
    np.save(tmp_path / "log.npy", rng.normal(size=(120, 6)).astype(np.float32))
    common = ["--embeddings", str(tmp_path / "log.npy"), "--max-epochs", "2", "--quiet"]
    # A count channel alone: no 'action' column is implied.
    assert (
        main(["fit", str(log), "--channel", "plus_one:count", "--out", str(tmp_path / "count"), *common]) == 0
    )
    run = json.loads((tmp_path / "count" / "run.json").read_text())
    assert [
        c["name"] for c in json.loads((tmp_path / "count/model/reward_model.json").read_text())["channels"]
    ] == ["plus_one"] and run["method"] == "implicitrm"
    declared = [
        "--channel",
        "stars:ordinal:7",
        "--channel",
        "rater:annotation",
        "--channel",
        "plus_one:count:negative",
    ]
    assert main(["fit", str(log), *declared, "--out", str(tmp_path / "all"), *common]) == 0
    saved = json.loads((tmp_path / "all/model/reward_model.json").read_text())
    assert saved["channels"] == [
        {"name": "stars", "polarity": "positive", "kind": "ordinal", "levels": 7},
        {"name": "rater", "polarity": "positive", "kind": "annotation", "levels": None},
        {"name": "plus_one", "polarity": "negative", "kind": "count", "levels": None},
    ]
    assert saved["channel_types"][1] == "pyro_irm.models.channel:AnnotatorChannel"
    capsys.readouterr()
    for bad, named in (("stars:rating", "kind 'rating' is not one of binary, count, ordinal"),
                       ("stars:ordinal:10000000", "LEVELS must be a whole number from 2 to 1000"),
                       ("stars:count:sideways", "'sideways' is neither a polarity")):  # fmt: skip
        assert main(["fit", str(log), "--channel", bad, "--out", str(tmp_path / "bad"), *common]) == 2
        assert named in capsys.readouterr().err
    # A kind registered by a plugin is listed in the help and read as any other.
    register_kind(
        ChannelKind("vote", "a 0/1 vote", "pyro_irm.models.channel:AnnotatorChannel", zero_one=True)
    )
    try:
        with pytest.raises(SystemExit):
            main(["fit", "--help"])
        assert "vote: a 0/1 vote" in capsys.readouterr().out
        assert (
            main(["fit", str(log), "--channel", "rater:vote", "--out", str(tmp_path / "vote"), *common]) == 0
        )
    finally:
        CHANNEL_KINDS.pop("vote")
