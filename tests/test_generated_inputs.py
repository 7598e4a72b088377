"""Generated faults beyond the log's rows: config files, damaged run directories and server
requests. Every case ends in a correct result or a refusal that names what is wrong (exit 2 with
the file, or a 4xx answer naming the field); never a traceback, never exit 1, never a 500, and an
answer never echoes a client's text back."""

import contextlib
import io
import json
import shutil
import tempfile
import tomllib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyro_irm.cli import main
from pyro_irm.data.logs import write_records

pytestmark = pytest.mark.filterwarnings("ignore::pyro_irm.models.identifiability.IdentifiabilityWarning")

# Values of every TOML type, kept small: a generated config must not ask for a 10^9-unit network.
_SCALAR = st.one_of(
    st.sampled_from([-1, 0, 1, 2, 3, 16, -1.0, 0.0, 0.5, 1e-3, 1e9, True, False, "", "auto", "cpu", "cuda"]),
    st.sampled_from(["mean", "last", "naive", "implicitrm", "svi", "float16", "none", "linear", "x" * 300]),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.text(max_size=8),
)
_VALUE = st.one_of(
    _SCALAR, st.lists(_SCALAR, max_size=3), st.dictionaries(st.text(max_size=4), _SCALAR, max_size=2)
)
_KEYS = {
    "train": ["method", "inference", "guide_gradient", "batch_size", "learning_rate", "weight_decay",
              "validation_fraction", "patience", "min_delta", "fit_labels", "seed", "device", "precision",
              "max_epoch"],
    "model": ["reward_head", "reward_hidden", "propensity_hidden", "guide_hidden", "propensity_features",
              "eps0", "eps1", "dropout", "channel_emission", "user_scale", "label_noise", "hidden"],
    "estimator": ["propensity_source", "propensity_clip", "propensity_power", "class_prior", "eps0", "eps1",
                  "folds", "regularization", "nnpu_beta", "clip"],
    "encoder": ["pooling", "text_mode", "layer", "max_length", "normalize", "batch_size", "precision"],
    "modle": ["reward_hidden"],
}  # fmt: skip


@st.composite
def _configs(draw):
    """``(file name, text)`` of a generated TOML or JSON config (now and then a broken one)."""
    real = [name for name in _KEYS if name != "modle"]
    sections = draw(st.lists(st.sampled_from(real), min_size=1, max_size=3, unique=True))
    if draw(st.integers(0, 9)) == 0:
        sections.append("modle")
    content = {
        name: draw(st.dictionaries(st.sampled_from(_KEYS[name]), _VALUE, min_size=1, max_size=3))
        for name in sections
    }
    if draw(st.integers(0, 9)) == 0:
        content = {"train": draw(_SCALAR)}  # a section that is not a table
    form = draw(st.sampled_from(["toml"] * 5 + ["json"] * 2 + ["broken"]))
    if form == "json":
        return "c.json", json.dumps(content)
    if form == "broken":
        return "c.toml", draw(st.sampled_from(["[train", "x = ", "[train]\nx = 1\nx = 2", "\x00", "{"]))
    return "c.toml", _toml(content)


def _toml(content) -> str:
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, float) and v != v:
            return "nan"
        if isinstance(v, float) and v in (float("inf"), float("-inf")):
            return "inf" if v > 0 else "-inf"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{json.dumps(k)} = {value(x)}" for k, x in v.items()) + "}"
        return json.dumps(v)

    if not isinstance(content, dict) or any(not isinstance(s, dict) for s in content.values()):
        return "train = " + value(next(iter(content.values()))) + "\n"
    return "".join(
        f"[{name}]\n" + "".join(f"{key} = {value(v)}\n" for key, v in section.items())
        for name, section in content.items()
    )


@pytest.fixture(scope="module")
def small_log(tmp_path_factory):
    """A 60-row log with embeddings, and a run fit on it."""
    root = tmp_path_factory.mktemp("generated_inputs")
    rng = np.random.default_rng(0)
    rows = [{"prompt": f"p{i // 2}", "response": f"r{i}", "action": int(rng.random() < 0.4), "user": i % 4}
            for i in range(60)]  # fmt: skip
    write_records(root / "log.jsonl", rows)
    np.save(root / "log.npy", rng.normal(size=(60, 6)).astype(np.float32))
    fit = ["fit", str(root / "log.jsonl"), "--embeddings", str(root / "log.npy"), "--out", str(root / "run")]
    assert main([*fit, "--max-epochs", "2", "--method", "naive", "--user-col", "user", "--quiet"]) == 0
    return root


def _run_cli(arguments) -> tuple[int, str]:
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = main(arguments)
    return code, stderr.getvalue()


@settings(max_examples=100, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(config=_configs())
def test_a_generated_config_fits_or_is_refused_naming_the_file(small_log, config):
    name, text = config
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / name
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        out = Path(directory) / "run"
        code, message = _run_cli(
            [
                "fit",
                str(small_log / "log.jsonl"),
                "--embeddings",
                str(small_log / "log.npy"),
                "--out",
                str(out),
                "--max-epochs",
                "1",
                "--config",
                str(path),
                "--quiet",
            ]  # fmt: skip
        )
        assert code in (0, 2) and "Traceback" not in message, message
        if code == 2:
            assert message.count("error:") == 1 and not out.exists(), message
            # A fault of the file names it; one of the values the fit then refuses names its setting.
            readable = _readable(path)
            assert name in message or (readable and any(key in message for key in _set_keys(readable))), (
                message
            )
        else:
            assert (out / "run.json").is_file()


def _readable(path: Path):
    try:
        text = path.read_text()
        return tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (ValueError, UnicodeDecodeError):
        return None


def _set_keys(content) -> set[str]:
    return {key for section in content.values() if isinstance(section, dict) for key in section}


_DAMAGE = st.sampled_from(["delete", "truncate", "empty", "garbage", "json-value", "json-drop"])
_FILES = ["run.json"] * 4 + ["model/weights.safetensors", "model/reward_model.json", "metrics.json"]


@settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(
    target=st.sampled_from(_FILES), damage=_DAMAGE, key=st.integers(0, 40), value=_VALUE, older=st.booleans()
)
def test_a_damaged_run_directory_scores_right_or_is_refused_naming_the_file(
    small_log, target, damage, key, value, older
):
    with tempfile.TemporaryDirectory() as directory:
        run = Path(directory) / "run"
        shutil.copytree(small_log / "run", run)
        if older:  # as an older version wrote it, with no digests: the damage reaches the loaders
            info = json.loads((run / "run.json").read_text())
            del info["digests"]
            (run / "run.json").write_text(json.dumps(info))
        path = run / target
        original = path.read_bytes()
        if damage == "delete":
            path.unlink()
        elif damage == "truncate":
            path.write_bytes(original[: len(original) // 2])
        elif damage == "empty":
            path.write_bytes(b"")
        elif damage == "garbage":
            path.write_bytes(b"\x00\xff" * 40)
        elif target.endswith(".json"):
            content = json.loads(original)
            keys = sorted(content)
            chosen = keys[key % len(keys)]
            if damage == "json-drop":
                del content[chosen]
            else:
                content[chosen] = value
            path.write_text(json.dumps(content))
        out = Path(directory) / "scores.jsonl"
        code, message = _run_cli(
            [
                "score",
                str(run),
                str(small_log / "log.jsonl"),
                "--embeddings",
                str(small_log / "log.npy"),
                "--out",
                str(out),
                "--quiet",
                *(["--trust-unverified-run"] if older else []),
            ]  # fmt: skip
        )
        assert code in (0, 2) and "Traceback" not in message, message
        if code == 2:
            assert str(run) in message and not out.exists(), message
        else:  # what was damaged does not decide the rewards (metrics.json, or a key score ignores)
            reference = Path(directory) / "reference.jsonl"
            assert main(["score", str(small_log / "run"), str(small_log / "log.jsonl"), "--embeddings",
                         str(small_log / "log.npy"), "--out", str(reference), "--quiet"]) == 0  # fmt: skip
            assert out.read_text() == reference.read_text(), (target, damage)


_TEXTS = st.lists(st.text(max_size=6) | st.sampled_from(["\ud800", "SECRET", "<|a|>x"]), max_size=4)
_FIELD = st.one_of(_TEXTS, _SCALAR, st.lists(_SCALAR, max_size=3), st.none())


@st.composite
def _requests(draw):
    """``(path, body bytes, content type)`` of a generated request."""
    path = draw(st.sampled_from(["/get_reward", "/score"]))
    if path == "/score":
        row = st.dictionaries(st.sampled_from(["prompt", "response", "x"]), _FIELD, max_size=3)
        rows = draw(st.lists(row, max_size=3))
        body = {"rows": rows} if draw(st.booleans()) else draw(_FIELD)
    else:
        body = draw(
            st.dictionaries(st.sampled_from(["query", "prompts", "responses", "labels"]), _FIELD, max_size=3)
        )
    raw = json.dumps(body).encode()  # a lone surrogate is sent as its JSON escape, as clients do
    if draw(st.booleans()):
        raw = draw(st.sampled_from([raw[: len(raw) // 2], b"", b"\xff\xfe", raw + b"}", b"x" * 3000]))
    kind = draw(st.sampled_from(["application/json", "application/json", "text/plain", ""]))
    return path, raw, kind


@pytest.fixture(scope="module")
def server(scorer, served):
    from pyro_irm.serve import create_app

    with served(create_app(scorer, query_separator="<|a|>", max_body_bytes=2000)) as base:
        yield base


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(request=_requests())
def test_a_generated_request_is_answered_or_refused_naming_the_field_never_a_500(server, request):
    import urllib.error
    import urllib.request

    path, raw, kind = request
    headers = {"Content-Type": kind} if kind else {}
    call = urllib.request.Request(server + path, data=raw, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(call, timeout=30) as answer:
            status, body = answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        with error:
            status, body = error.code, json.loads(error.read())
    assert status in (200, 400, 413, 415, 422), (status, body)
    if status == 200:
        values = body["rewards"] if path == "/get_reward" else [s["reward"] for s in body["scores"]]
        assert all(np.isfinite(values))
    else:
        assert body["detail"] and "SECRET" not in json.dumps(body), body
