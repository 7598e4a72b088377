"""The reward model handed to RLHF: a transformers export that loads without pyro_irm, the reward
server, best-of-N."""

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from pyro_irm.analysis.metrics import auc
from pyro_irm.cli import main
from pyro_irm.data.logs import write_records
from pyro_irm.rerank import best_of_n
from pyro_irm.serve import split_queries

pytestmark = pytest.mark.filterwarnings("ignore::pyro_irm.models.identifiability.IdentifiabilityWarning")

_WORDS = "the reward model user copies code answer short long helpful wrong python list sort".split()


def _text_rows(count=120, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        response = " ".join(rng.choice(_WORDS, size=int(rng.integers(2, 20))))
        helpful = "helpful" in response
        rows.append({"prompt": f"question {i // 3} about sorting", "response": response,
                     "action": int(helpful and rng.random() < 0.7 or rng.random() < 0.1),
                     "label": int(helpful)})  # fmt: skip
    return rows


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    """A run fit from text (the default encoder, short sequences), with a log of fresh rows."""
    root = tmp_path_factory.mktemp("rlhf")
    write_records(root / "train.jsonl", _text_rows())
    write_records(root / "rows.jsonl", _text_rows(count=30, seed=1))
    code = main(["fit", str(root / "train.jsonl"), "--out", str(root / "run"), "--max-epochs", "5",
                 "--encoder-max-length", "64", "--cache-dir", str(root / "cache"), "--quiet"])  # fmt: skip
    assert code == 0
    code = main(["score", str(root / "run"), str(root / "rows.jsonl"), "--out", str(root / "scores.jsonl"),
                 "--cache-dir", str(root / "cache"), "--quiet"])  # fmt: skip
    assert code == 0
    scores = [json.loads(line)["reward"] for line in (root / "scores.jsonl").read_text().splitlines()]
    labels = [json.loads(line)["label"] for line in (root / "rows.jsonl").read_text().splitlines()]
    assert auc(labels, scores) > 0.75  # the fit learned which responses help: not a constant reward
    return root, np.array(scores)


_LOAD_EXPORT = """
from transformers import AutoModelForSequenceClassification, AutoTokenizer

directory, rows = sys.argv[1], [json.loads(line) for line in open(sys.argv[2])]
model = AutoModelForSequenceClassification.from_pretrained(directory, trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=True)
prompts, responses = [r["prompt"] for r in rows], [r["response"] for r in rows]
tokens = tokenizer(prompts, responses, padding=True, truncation="longest_first",
                   max_length=model.config.text_max_length, return_tensors="pt")
print(json.dumps({
    "reward": model.reward(tokenizer, prompts, responses).tolist(),
    "logits": model(**tokens).logits[:, 0].tolist(),
    "num_labels": model.config.num_labels,
    "mean": model.config.reward_mean,
    "std": model.config.reward_std,
    "pyro_irm_imported": any(name.startswith("pyro_irm") for name in sys.modules),
}))
"""


@pytest.mark.slow
def test_an_export_loads_with_transformers_alone_and_matches_score(text_run, tmp_path, without_pyro_irm):
    root, scores = text_run
    assert main(["export", str(root / "run"), "--out", str(tmp_path / "export"), "--quiet"]) == 0
    files = {p.name for p in (tmp_path / "export").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= files
    assert "modeling_pyro_irm_reward.py" in files and not any(name.endswith(".bin") for name in files)
    script = without_pyro_irm + _LOAD_EXPORT
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "export"), str(root / "rows.jsonl")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert not loaded["pyro_irm_imported"] and loaded["num_labels"] == 1
    np.testing.assert_allclose(loaded["reward"], scores, atol=1e-4)
    np.testing.assert_allclose(loaded["logits"], scores, atol=1e-4)
    assert np.ptp(scores) > 1e-3  # the rewards differ between rows, so matching them means something
    stats = json.loads((root / "run" / "run.json").read_text())["reward_stats"]
    assert loaded["mean"] == pytest.approx(stats["mean"]) and loaded["std"] == pytest.approx(stats["std"])
    assert stats["rows"] == 120 and stats["std"] > 0


def test_an_export_of_a_run_without_an_encoder_is_refused(tmp_path, capsys):
    write_records(tmp_path / "log.jsonl", _text_rows(20))
    np.save(tmp_path / "log.npy", np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32))
    assert main(["fit", str(tmp_path / "log.jsonl"), "--embeddings", str(tmp_path / "log.npy"), "--out",
                 str(tmp_path / "run"), "--max-epochs", "1", "--quiet"]) == 0  # fmt: skip
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "export")]) == 2
    assert "names no encoder to export" in capsys.readouterr().err
    assert not (tmp_path / "export").exists()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _post(url, payload, raw=None):
    data = raw if raw is not None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.slow
def test_the_server_answers_openrlhf_requests_with_the_scores_and_refuses_bad_ones(text_run):
    root, scores = text_run
    rows = [json.loads(line) for line in (root / "rows.jsonl").read_text().splitlines()]
    port = _free_port()
    code = (f"import sys; from pyro_irm.cli import main; sys.exit(main(['serve', {str(root / 'run')!r}, "
            f"'--port', '{port}', '--query-separator', '<|assistant|>', '--quiet']))")  # fmt: skip
    server = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.communicate()
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=5) as response:
                    assert json.loads(response.read())["status"] == "ok"
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        prompts, responses = [r["prompt"] for r in rows], [r["response"] for r in rows]
        status, body = _post(f"{base}/get_reward", {"prompts": prompts, "responses": responses})
        assert status == 200
        np.testing.assert_allclose(body["rewards"], scores, atol=1e-4)
        # OpenRLHF's shape: the whole sequence with its prompt (and labels, ignored) ...
        queries = [p + r for p, r in zip(prompts, responses, strict=True)]
        status, body = _post(f"{base}/get_reward", {"query": queries, "prompts": prompts, "labels": [0] * 30})
        np.testing.assert_allclose(body["rewards"], scores, atol=1e-4)
        # ... or bare, split at the separator.
        bare = [f"{p}<|assistant|>{r}" for p, r in zip(prompts, responses, strict=True)]
        np.testing.assert_allclose(
            _post(f"{base}/get_reward", {"query": bare})[1]["rewards"], scores, atol=1e-4
        )
        status, body = _post(f"{base}/score", {"rows": rows[:3]})
        assert status == 200 and len(body["scores"]) == 3
        assert body["scores"][0]["reward"] == pytest.approx(scores[0], abs=1e-4)

        # Concurrent clients share batches: fewer batches than requests.
        before = json.loads(urllib.request.urlopen(f"{base}/health").read())["batches"]
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda i: _post(f"{base}/get_reward", {"prompts": [prompts[i]],
                                                    "responses": [responses[i]]}), range(30)))  # fmt: skip
        assert all(status == 200 for status, _ in answers)
        np.testing.assert_allclose([body["rewards"][0] for _, body in answers], scores, atol=1e-4)
        after = json.loads(urllib.request.urlopen(f"{base}/health").read())["batches"]
        assert after - before < 30

        bad = [
            ({"query": ["no separator here"]}, None, 400, "does not contain the separator"),
            ({"query": ["x"], "prompts": ["y"]}, None, 400, "does not start with its prompt"),
            ({"prompts": ["a"], "responses": ["b", "c"]}, None, 400, "of the same length"),
            ({}, None, 400, "send 'query'"),
            ({"query": [1, 2]}, None, 422, "valid string"),
            (None, b"{not json", 422, "JSON"),
        ]
        for payload, raw, expected, words in bad:
            status, body = _post(f"{base}/get_reward", payload, raw)
            assert status == expected and words in json.dumps(body), (payload, status, body)
        assert server.poll() is None  # still serving

        # SIGTERM while a request is being scored: it is answered, then the server exits 130.
        many = {"prompts": prompts * 40, "responses": responses * 40}
        with ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(_post, f"{base}/get_reward", many)
            time.sleep(0.3)
            server.send_signal(signal.SIGTERM)
            status, body = in_flight.result(timeout=120)
        assert status == 200
        np.testing.assert_allclose(body["rewards"], np.tile(scores, 40), atol=1e-4)
        assert server.wait(timeout=60) == 130
    finally:
        if server.poll() is None:
            server.terminate()
        server.communicate(timeout=30)


def test_queries_split_by_prompt_or_separator():
    assert split_queries(["Q: hi A: yo"], ["Q: hi"], None) == (["Q: hi"], [" A: yo"])
    assert split_queries(["Q: a A: b A: c"], None, " A: ") == (["Q: a A: b"], ["c"])
    with pytest.raises(ValueError, match="--query-separator"):
        split_queries(["x"], None, None)


def test_best_of_n_picks_the_highest_reward_and_scores_the_picks_by_hand():
    result = best_of_n([0.1, 0.9, 0.5, 2.0, 1.0, 7.0], ["a", "a", "a", "b", "b", "c"], [0, 1, 0, 0, 1, 1])
    assert result.picks.tolist() == [1, 3, 5] and result.candidates.tolist() == [3, 2, 1]
    summary = result.summary
    assert summary["prompts"] == 2  # "c" has one candidate
    # a: the pick (label 1) beats two of three candidates and ties itself: (1 + 1 + 0.5) / 3;
    # b: the pick (label 0) ties itself and loses to the other: 0.5 / 2.
    assert summary["win_rate_vs_random"] == pytest.approx((2.5 / 3 + 0.25) / 2)
    assert summary["optimal_rate"] == 0.5 and summary["win_rate_vs_optimal"] == 0.25
    assert summary["quality_of_random_choice"] == pytest.approx((1 / 3 + 1 / 2) / 2)


def test_a_tie_at_the_top_is_split_evenly_not_broken_by_row_order():
    # The better response listed first in every prompt, and a reward that ties every pair: picking
    # the first row would read as a win over random choice; split evenly it is chance, and counted.
    prompts = np.repeat(np.arange(200), 2)
    quality = np.tile([1.0, 0.0], 200)
    tied = best_of_n(np.zeros(400), prompts, quality)
    assert tied.picks.tolist() == list(range(0, 400, 2)) and tied.tied.tolist() == [2] * 200
    summary = tied.summary
    assert summary["tied_prompts"] == 200 and summary["win_rate_vs_random"] == pytest.approx(0.5)
    assert summary["optimal_rate"] == pytest.approx(0.5) and summary["quality_of_picks"] == pytest.approx(0.5)
    low, high = summary["intervals"]["win_rate_vs_random"]
    assert low <= 0.5 <= high
    # A tie among three with one of them best: a third of the best pick's credit, and no tie counted
    # where the highest reward is one candidate's.
    mixed = best_of_n([1.0, 1.0, 1.0, 0.0, 5.0, 2.0], [0, 0, 0, 1, 1, 1], [1.0, 0.0, 0.0, 1.0, 0.0, 1.0])
    assert mixed.tied.tolist() == [3, 1] and mixed.summary["tied_prompts"] == 1
    assert mixed.summary["optimal_rate"] == pytest.approx((1 / 3 + 0) / 2)


def test_best_of_n_of_a_reward_that_follows_quality_beats_chance_and_a_random_reward_does_not():
    rng = np.random.default_rng(0)
    prompts = np.repeat(np.arange(2000), 4)
    quality = rng.normal(size=prompts.size)
    good = best_of_n(quality + rng.normal(size=prompts.size), prompts, quality).summary
    chance = best_of_n(rng.normal(size=prompts.size), prompts, quality).summary
    standard_error = 0.5 / np.sqrt(2000)
    assert good["win_rate_vs_random"] > 0.5 + 15 * standard_error
    perfect = best_of_n(quality, prompts, quality).summary
    assert perfect["win_rate_vs_random"] == pytest.approx(3.5 / 4) and perfect["optimal_rate"] == 1.0
    assert abs(chance["win_rate_vs_random"] - 0.5) < 3 * standard_error
    assert chance["optimal_rate"] == pytest.approx(0.25, abs=0.03)
    # The bootstrap intervals over prompts tell the two apart: the good reward's excludes chance,
    # the random reward's holds it, and each holds its own estimate.
    low, high = good["intervals"]["win_rate_vs_random"]
    assert 0.5 < low < good["win_rate_vs_random"] < high
    low, high = chance["intervals"]["win_rate_vs_random"]
    assert low < 0.5 < high and high - low < 8 * standard_error


def test_evaluate_pairs_gives_the_accuracy_computed_by_hand(text_run, tmp_path):
    root, _ = text_run
    rows = [json.loads(line) for line in (root / "rows.jsonl").read_text().splitlines()]
    pairs = [{"prompt": rows[i]["prompt"], "chosen": rows[i]["response"], "rejected": rows[i + 1]["response"]}
             for i in range(0, 30, 2)]  # fmt: skip
    write_records(tmp_path / "pairs.jsonl", pairs)
    sides = {}
    for side in ("chosen", "rejected"):
        write_records(
            tmp_path / f"{side}.jsonl", [{"prompt": p["prompt"], "response": p[side]} for p in pairs]
        )
        assert (
            main(
                [
                    "score",
                    str(root / "run"),
                    str(tmp_path / f"{side}.jsonl"),
                    "--out",
                    str(tmp_path / f"{side}_scores.jsonl"),
                    "--cache-dir",
                    str(root / "cache"),
                    "--quiet",
                ]
            )
            == 0
        )
        lines = (tmp_path / f"{side}_scores.jsonl").read_text().splitlines()
        sides[side] = np.array([json.loads(line)["reward"] for line in lines])  # fmt: skip
    by_hand = float(np.mean(sides["chosen"] > sides["rejected"]))
    code = main(["evaluate", str(root / "run"), "--pairs", str(tmp_path / "pairs.jsonl"), "--json",
                 str(tmp_path / "pairs.json"), "--cache-dir", str(root / "cache"), "--quiet"])  # fmt: skip
    assert code == 0
    result = json.loads((tmp_path / "pairs.json").read_text())["run"]
    assert result["pairs"] == 15 and result["accuracy"] == pytest.approx(by_hand)
    assert 0 < by_hand < 1  # both outcomes occur, so the comparison is not trivially right
    low, high = result["intervals"]["accuracy"]
    assert low <= by_hand <= high


def test_evaluate_reports_length_bias_and_intervals_that_hold_the_estimate(text_run, tmp_path):
    root, _ = text_run
    code = main(["evaluate", str(root / "run"), "--log", str(root / "rows.jsonl"), "--json",
                 str(tmp_path / "metrics.json"), "--cache-dir", str(root / "cache"), "--quiet"])  # fmt: skip
    assert code == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())["run"]
    assert np.isfinite(metrics["length_bias"])
    for name in ("auc", "log_loss", "length_bias"):
        low, high = metrics["intervals"][name]
        assert low <= metrics[name] <= high and high > low


@pytest.mark.slow
def test_best_of_n_on_the_ultrafeedback_sample_matches_the_library(tmp_path, capsys):
    from pyro_irm.data import ultrafeedback_sample

    train, evaluation = ultrafeedback_sample("train"), ultrafeedback_sample("eval")
    cache = ["--cache-dir", str(tmp_path / "cache")]
    for source, out, seed in ((train, "train.jsonl", "0"), (evaluation, "eval.jsonl", "1")):
        assert main(["simulate", "--dataset", "ultrafeedback", "--data-file", str(source), "--out",
                     str(tmp_path / out), "--seed", seed, "--quiet"]) == 0  # fmt: skip
    assert main(["fit", str(tmp_path / "train.jsonl"), "--out", str(tmp_path / "run"), "--method", "oracle",
                 "--encoder-max-length", "128", *cache, "--quiet"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["best-of-n", str(tmp_path / "run"), str(tmp_path / "eval.jsonl"), "--out",
                 str(tmp_path / "picks.jsonl"), *cache, "--quiet"]) == 0  # fmt: skip
    reported = capsys.readouterr().err
    picks = [json.loads(line) for line in (tmp_path / "picks.jsonl").read_text().splitlines()]
    assert len(picks) == 200 and all(p["candidates"] == 2 for p in picks)
    # The same numbers from the library, on the scores `score` writes.
    assert main(["score", str(tmp_path / "run"), str(tmp_path / "eval.jsonl"), "--out",
                 str(tmp_path / "scores.jsonl"), *cache, "--quiet"]) == 0  # fmt: skip
    scores = [json.loads(line) for line in (tmp_path / "scores.jsonl").read_text().splitlines()]
    truth = [json.loads(line)["score"] for line in (tmp_path / "eval.jsonl").read_text().splitlines()]
    result = best_of_n([s["reward"] for s in scores], [s["prompt_id"] for s in scores], truth)
    assert [int(scores[i]["row"]) for i in result.picks] == [p["row"] for p in picks]
    assert f"win rate against random choice {result.summary['win_rate_vs_random']:.3f}" in reported
    # Within-prompt ranking of UltraFeedback's pairs by a frozen MiniLM is close to chance (BENCHMARKS.md):
    # the pick must be at least no worse than chance, within two standard errors.
    assert result.summary["win_rate_vs_random"] > 0.5 - 2 * 0.5 * 0.5 / np.sqrt(200)
