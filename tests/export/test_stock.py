"""A linear head over a decoder's last token leaves as the backbone's own stock sequence classifier:
it loads without remote code (as TRL, OpenRLHF and vLLM load it) and gives the rewards `score` gives."""

import json
import subprocess
import sys

import numpy as np
import pytest

from pyro_irm.cli import main
from pyro_irm.data.logs import write_records

pytestmark = pytest.mark.filterwarnings("ignore::pyro_irm.models.identifiability.IdentifiabilityWarning")

_WORDS = "the a reward model copies code answer short long helpful wrong good bad very not and".split()
MAX_LENGTH = 160


def _rows(count, seed):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        # Every 7th row's response alone overflows MAX_LENGTH tokens: the fit and the exported
        # tokenizer both read its last MAX_LENGTH tokens; the others fit whole.
        size = int(rng.integers(1, 14)) if i % 7 else 200
        response = " ".join(rng.choice(_WORDS, size=size))
        helpful = "helpful" in response
        rows.append({"prompt": f"question {i % 5}", "response": response,
                     "action": int(helpful and rng.random() < 0.7 or rng.random() < 0.1)})  # fmt: skip
    return rows


def _fit(tmp_path, encoder, head="linear", extra=()):
    write_records(tmp_path / "train.jsonl", _rows(60, 0))
    write_records(tmp_path / "rows.jsonl", _rows(21, 1))
    common = ["--cache-dir", str(tmp_path / "cache"), "--quiet"]
    code = main([
        "fit", str(tmp_path / "train.jsonl"), "--out", str(tmp_path / "run"), "--encoder", str(encoder),
        "--encoder-device", "cpu", "--encoder-max-length", str(MAX_LENGTH), "--reward-head", head,
        "--max-epochs", "3", *extra, *common,
    ])  # fmt: skip
    assert code == 0
    assert main(["score", str(tmp_path / "run"), str(tmp_path / "rows.jsonl"),
                 "--out", str(tmp_path / "scores.jsonl"), *common]) == 0  # fmt: skip
    scores = [json.loads(line)["reward"] for line in (tmp_path / "scores.jsonl").read_text().splitlines()]
    return np.array(scores)


_LOAD_STOCK = """
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

directory, rows = sys.argv[1], [json.loads(line) for line in open(sys.argv[2])]
model = AutoModelForSequenceClassification.from_pretrained(directory).eval()  # no trust_remote_code
tokenizer = AutoTokenizer.from_pretrained(directory)
conversations = [[{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["response"]}]
                 for r in rows]
tokens = tokenizer.apply_chat_template(conversations, tokenize=True, padding=True, truncation=True,
                                       return_dict=True, return_tensors="pt")
with torch.no_grad():
    logits = model(**tokens).logits[:, 0]
print(json.dumps({
    "logits": logits.tolist(),
    "class": type(model).__name__,
    "pad_token_id": model.config.pad_token_id,
    "tokens_per_row": tokens["attention_mask"].sum(1).tolist(),
    "padding_side": tokenizer.padding_side,
    "mean": model.config.mean, "std": model.config.std,
    "pyro_irm_imported": any(name.startswith("pyro_irm") for name in sys.modules),
}))
"""


def _load_stock(directory, rows, cwd, prelude):
    result = subprocess.run([sys.executable, "-c", prelude + _LOAD_STOCK, str(directory), str(rows)],
                            capture_output=True, text=True, timeout=300, cwd=cwd)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize(
    "family,stock_class",
    [("llama", "LlamaForSequenceClassification"), ("qwen2", "Qwen2ForSequenceClassification"),
     ("mistral", "MistralForSequenceClassification")],
)  # fmt: skip
def test_a_linear_head_exports_as_a_stock_classifier_that_reproduces_score(tiny_decoders, tmp_path, family,
                                                                            without_pyro_irm,
                                                                            stock_class):  # fmt: skip
    scores = _fit(tmp_path, tiny_decoders[family])
    assert np.ptp(scores) > 1e-3  # rewards differ between rows, so matching them means something
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "export"), "--format", "stock",
                 "--quiet"]) == 0  # fmt: skip
    files = {p.name for p in (tmp_path / "export").iterdir()}
    assert not any(name.endswith(".py") for name in files) and "model.safetensors" in files
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert "auto_map" not in config and config["architectures"] == [stock_class]
    loaded = _load_stock(tmp_path / "export", tmp_path / "rows.jsonl", tmp_path, without_pyro_irm)
    assert loaded["class"] == stock_class and not loaded["pyro_irm_imported"]
    assert max(loaded["tokens_per_row"]) == MAX_LENGTH  # the long rows were cut as the fit cut them
    np.testing.assert_allclose(loaded["logits"], scores, atol=1e-4)
    stats = json.loads((tmp_path / "run" / "run.json").read_text())["reward_stats"]
    assert loaded["mean"] == pytest.approx(stats["mean"]) and loaded["std"] == pytest.approx(stats["std"])


@pytest.mark.slow
def test_a_backbone_whose_tokenizer_pads_on_the_left_exports_one_that_pads_on_the_right(
    tiny_decoder_factory, tmp_path, without_pyro_irm
):
    """Gemma's tokenizer class pads on the left by default; the export's README says it pads on the
    right, and the saved tokenizer must say so too, or a reader padding a batch reads another layout."""
    backbone = tiny_decoder_factory(tmp_path / "left", "llama")
    settings = json.loads((backbone / "tokenizer_config.json").read_text())
    # Gemma's tokenizer class, whose default side is the left (it reads the same tokenizer.json)
    (backbone / "tokenizer_config.json").write_text(
        json.dumps({**settings, "tokenizer_class": "GemmaTokenizer"})
    )
    scores = _fit(tmp_path, backbone)
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "export"), "--format", "stock",
                 "--quiet"]) == 0  # fmt: skip
    loaded = _load_stock(tmp_path / "export", tmp_path / "rows.jsonl", tmp_path, without_pyro_irm)
    assert loaded["padding_side"] == "right"
    np.testing.assert_allclose(loaded["logits"], scores, atol=1e-4)


@pytest.mark.slow
def test_a_pad_token_the_template_writes_is_replaced_so_the_last_token_is_found(
    tiny_decoders, tmp_path, without_pyro_irm
):
    from transformers import AutoTokenizer

    from pyro_irm.encoders.encoder import end_of_turn_template

    # The mistral-shaped template ends every row in EOS, and the tokenizer pads with EOS.
    original = AutoTokenizer.from_pretrained(tiny_decoders["mistral"])
    assert original.pad_token == original.eos_token
    scores = _fit(tmp_path, tiny_decoders["mistral"])
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "export"), "--quiet"]) == 0
    exported = AutoTokenizer.from_pretrained(tmp_path / "export")
    assert exported.pad_token != original.eos_token and exported.padding_side == "right"
    assert exported.model_max_length == MAX_LENGTH and exported.truncation_side == "left"
    assert exported.chat_template == end_of_turn_template(original.chat_template)
    loaded = _load_stock(tmp_path / "export", tmp_path / "rows.jsonl", tmp_path, without_pyro_irm)
    assert loaded["pad_token_id"] == exported.pad_token_id
    np.testing.assert_allclose(loaded["logits"], scores, atol=1e-4)


def test_choose_pad_token_skips_every_token_a_rendered_row_holds(tiny_decoders):
    from transformers import AutoTokenizer

    from pyro_irm.export.stock import ADDED_PAD_TOKEN, choose_pad_token

    llama = AutoTokenizer.from_pretrained(tiny_decoders["llama"])
    assert choose_pad_token(llama, "chat") == ("<pad>", False)  # its own pad is never rendered
    mistral = AutoTokenizer.from_pretrained(tiny_decoders["mistral"])
    token, added = choose_pad_token(mistral, "chat")
    assert token not in ("</s>", "<s>", "[INST]", "[/INST]") and not added  # "<unk>": never rendered here
    qwen = AutoTokenizer.from_pretrained(tiny_decoders["qwen2"])
    qwen.chat_template = (
        "{% for m in messages %}<|im_start|><|im_end|><|endoftext|>{{ m['content'] }}{% endfor %}"
    )
    assert choose_pad_token(qwen, "chat") == (ADDED_PAD_TOKEN, True)  # every special token is rendered


@pytest.mark.slow
def test_stock_is_refused_with_its_reasons_and_auto_falls_back_to_remote_code(
    tiny_decoders, tmp_path, capsys
):
    scores = _fit(tmp_path, tiny_decoders["llama"], head="mlp")
    capsys.readouterr()
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "stock"), "--format", "stock"]) == 2
    error = capsys.readouterr().err
    assert "the reward head is an MLP" in error and "--reward-head linear" in error
    assert not (tmp_path / "stock").exists()
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "remote"), "--quiet"]) == 0
    assert (tmp_path / "remote" / "modeling_pyro_irm_reward.py").exists()
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "remote", trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "remote")
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    rewards = model.reward(
        tokenizer, [r["prompt"] for r in rows], [r["response"] for r in rows], batch_size=8
    )
    np.testing.assert_allclose(rewards.numpy(), scores, atol=1e-4)


def test_a_bayesian_head_on_the_bias_free_linear_head_is_refused():
    from pyro_irm import ModelConfig, SimulationConfig, TrainConfig, fit, fit_bayesian_head, simulate

    data = simulate(SimulationConfig(num_rows=400, embedding_dim=8, seed=0))
    model = fit(data, TrainConfig(max_epochs=1), ModelConfig(reward_head="linear")).reward_model
    assert [type(m).__name__ for m in model.model.reward_net] == ["Linear"]
    assert model.model.reward_net[0].bias is None
    with pytest.raises(ValueError, match="has no bias"):
        fit_bayesian_head(model, data.embeddings, data.actions)
