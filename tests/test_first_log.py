"""A user's own log, the first time: a chat product's export (examples/chat_export.csv, written also
as JSONL and Parquet) with a thumbs
column of up/down/empty, a true/false copy column, a yes/no regenerate column and some empty dwell
cells fits with one command and no hand edits; every command on the run then reads the log with
the run's own column mapping; and each message a first user met says what to do, in flags the
command has."""

import csv
import json
import os
from pathlib import Path

import pytest

from pyro_irm.cli import main

FIT_FLAGS = [
    "--prompt-col", "question", "--response-col", "answer", "--user-col", "user",
    "--action-col", "copied", "--negative-action-col", "regenerated",
    "--action-values", "thumbs=up:positive,down:negative", "--continuous-action-col", "seconds_on_page",
]  # fmt: skip


EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "chat_export.csv"


def export_rows(rows: int = 300) -> list[dict]:
    """The first ``rows`` of the example export the README uses (examples/chat_export.csv)."""
    with EXAMPLE.open(newline="") as stream:
        return list(csv.DictReader(stream))[:rows]


def write_export(path, records) -> str:
    if path.suffix == ".csv":
        columns = list(records[0])
        lines = [",".join(columns)] + [",".join(str(r[c]) for c in columns) for r in records]
        path.write_text("\n".join(lines) + "\n")
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps({k: (v or None) for k, v in r.items()}) + "\n" for r in records))
    else:
        import pandas as pd

        frame = pd.DataFrame(records)
        frame["copied"] = frame["copied"] == "true"  # a real boolean column
        frame["thumbs"] = frame["thumbs"].replace("", None)
        frame["seconds_on_page"] = pd.to_numeric(frame["seconds_on_page"].replace("", None))
        frame.to_parquet(path)
    return str(path)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_the_export_fits_with_one_command_and_every_command_reuses_its_mapping(
    suffix, tmp_path, cache, capsys, monkeypatch
):
    records = export_rows()
    log = write_export(tmp_path / f"chat{suffix}", records)
    run = str(tmp_path / "run")
    fit = ["fit", log, *FIT_FLAGS, "--out", run, "--max-epochs", "3", "--cache-dir", cache, "--quiet"]
    assert main(fit) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    empty = sum(r["seconds_on_page"] == "" for r in records)
    assert f"left out of their rows' likelihood: seconds_on_page {empty}" in err  # counted, not silent
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["log"] == os.path.realpath(log) and len(info["log_sha256"]) == 64

    # score with no column flags: the run's mapping (question, answer) is used
    assert main(["score", run, log, "--cache-dir", cache, "--quiet"]) == 0, capsys.readouterr().err
    scored = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(scored) == len(records)
    assert main(["score", run, log, "--groups", "--cache-dir", cache, "--quiet"]) == 0
    groups = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert all(abs(sum(g[k] for k in g if k.startswith(("engaged", "silent"))) - 1) < 1e-4 for g in groups)

    # report from another directory finds the log where the fit read it
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["report", run, "--cache-dir", cache]) == 0, capsys.readouterr().err
    assert (tmp_path / "run" / "report" / "report.md").is_file()
    assert main(["best-of-n", run, log, "--cache-dir", cache, "--quiet"]) == 0, capsys.readouterr().err


def test_the_fitted_channels_are_the_columns_and_their_values(tmp_path, cache, capsys):
    """One categorical column is two channels of opposite sign; the model reads five channels."""
    from pyro_irm.runs import Run

    log = write_export(tmp_path / "chat.csv", export_rows())
    run = str(tmp_path / "run")
    assert main(["fit", log, *FIT_FLAGS, "--out", run, "--max-epochs", "2", "--cache-dir", cache, "-q"]) == 0
    specs = Run.load(run).reward_model.model.channel_specs
    assert [(s.name, s.polarity, s.kind) for s in specs] == [
        ("copied", "positive", "binary"), ("regenerated", "negative", "binary"),
        ("seconds_on_page", "positive", "continuous"), ("thumbs=up", "positive", "binary"),
        ("thumbs=down", "negative", "binary"),
    ]  # fmt: skip


def _fails(arguments, capsys) -> str:
    assert main(arguments) == 2
    return capsys.readouterr().err


def test_each_message_a_first_user_met_now_says_what_to_do(tmp_path, cache, capsys):
    records = export_rows(40)
    log = write_export(tmp_path / "chat.csv", records)
    common = [log, "--prompt-col", "question", "--response-col", "answer", "--out", str(tmp_path / "r")]

    # thumbs read as a number: the message names the value, the accepted words and --action-values
    err = _fails(["fit", *common, "--action-col", "thumbs"], capsys)
    assert "field 'thumbs': 'up' is not 0/1, a number or a yes/no word" in err or "'down'" in err
    assert "--action-values maps a column of categories" in err
    assert "on_error" not in err and "--skip-bad-rows" in err  # flags, not a Python argument

    # a value the map does not name lists the ones it does
    err = _fails(["fit", *common, "--action-values", "thumbs=up:positive"], capsys)
    assert "'down' is not a value --action-values maps for 'thumbs' (it maps up (positive)" in err

    # yes/no words are 0/1; words of one's own are taken with --true-values
    maybe = [dict(r, copied="sure" if i == 3 else r["copied"]) for i, r in enumerate(records)]
    odd = write_export(tmp_path / "odd.csv", maybe)
    err = _fails(["fit", odd, *common[1:], "--action-col", "copied"], capsys)
    assert "row 4, field 'copied': 'sure' is not 0/1" in err and "read as 1: on, t, true, y, yes" in err
    words = ["--true-values", "true", "--true-values", "sure"]
    fit_words = ["fit", odd, *common[1:], "--action-col", "copied", "--user-col", "user", *words,
                 "--max-epochs", "1", "--cache-dir", cache, "-q"]  # fmt: skip
    assert main(fit_words) == 0, capsys.readouterr().err

    # an empty dwell cell: marginalized by default; refused on request, naming --missing
    err = _fails(["fit", *common, "--continuous-action-col", "seconds_on_page", "--missing",
                  "seconds_on_page=refuse"], capsys)  # fmt: skip
    assert "field 'seconds_on_page': is empty" in err and "--missing" in err
    err = _fails(["fit", *common, "--action-col", "copied", "--missing", "seconds=zero"], capsys)
    assert "--missing seconds=zero: 'seconds' is not an action column (copied)" in err

    # score's hint names only flags score has
    run = str(tmp_path / "run")
    assert main(["fit", log, *FIT_FLAGS, "--out", run, "--max-epochs", "1", "--cache-dir", cache, "-q"]) == 0
    broken = tmp_path / "broken.jsonl"
    rows = [{k: v for k, v in r.items() if not (i == 2 and k == "answer")} for i, r in enumerate(records)]
    broken.write_text("".join(json.dumps(r) + "\n" for r in rows))
    err = _fails(["score", run, str(broken), "--cache-dir", cache, "-q"], capsys)
    assert (
        "row 3, field 'answer'" in err
        and "--prompt-col, --response-col), or drop bad rows with --skip-bad-rows" in err
    )
    assert "--action-col" not in err

    # a log that moved: the report says where it was and how to give it
    os.remove(log)
    err = _fails(["report", run], capsys)
    assert "which is no longer there; give the log with --log" in err


def test_version_help_placeholders_and_defaults(capsys):
    with pytest.raises(SystemExit) as exit_code:
        main(["--version"])
    assert exit_code.value.code == 0 and capsys.readouterr().out.startswith("pyro-irm ")
    for command in (
        "fit",
        "score",
        "evaluate",
        "report",
        "best-of-n",
        "simulate",
        "benchmark",
        "embed",
        "serve",
    ):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        for internal in ("SCHEMA_", "TRAIN_", "EST_", "MODEL_", "SIM_", "CHAT_", "ENCODER_", "(default: ("):
            assert internal not in text, (command, internal)
        if command == "simulate":
            assert "(default: alpha_power)" in " ".join(text.split())
        if command == "fit":
            assert " ".join(text.split()).count("all-MiniLM-L6-v2") == 1
        if command == "embed":
            assert "used when --embeddings is not given" not in text
