"""Decoder LLMs read as the papers read them: last token, chat template, any layer (tiny random
models made in conftest.py; no download)."""

import shutil

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from pyro_irm.encoders import EncoderConfig, TextEncoder, embed_rows, open_cache
from pyro_irm.encoders.encoder import chat_messages, end_of_turn_template

FAMILIES = ("llama", "qwen2", "mistral", "gpt2")
PROMPTS = ["what is two plus two", "a", "is it good or bad", "the user copies code", "yes"]
RESPONSES = [
    "four",
    "the reward model copies code and it is very long and helpful",
    "it depends",
    "no",
    "a b",
]


def _encoder(directory, **settings):
    return TextEncoder(EncoderConfig(model=str(directory), device="cpu", batch_size=8, **settings))


def _state_by_hand(directory, ids, layer=-1):
    """The model's hidden state at the last token of one unpadded row."""
    model = AutoModel.from_pretrained(directory).eval()
    with torch.no_grad():
        output = model(torch.tensor([ids]), output_hidden_states=True)
    return output.hidden_states[layer][0, -1].numpy()


@pytest.mark.parametrize("family", FAMILIES)
def test_a_decoder_defaults_to_its_last_token_over_the_chat_template_unscaled(tiny_decoders, family, minilm):
    config = _encoder(tiny_decoders[family]).config
    assert (config.pooling, config.text_mode, config.normalize) == ("last", "chat", False)
    assert (minilm.config.pooling, minilm.config.text_mode, minilm.config.normalize) == ("mean", "pair", True)


@pytest.mark.parametrize("family", FAMILIES)
def test_chat_rows_are_the_template_rendering_up_to_the_end_of_turn_token(tiny_decoders, family):
    encoder = _encoder(tiny_decoders[family], max_length=512)
    tokenizer = AutoTokenizer.from_pretrained(tiny_decoders[family])
    exported = AutoTokenizer.from_pretrained(tiny_decoders[family])
    exported.chat_template = end_of_turn_template(tokenizer.chat_template)
    ours = encoder.tokenize(PROMPTS, RESPONSES)[0]["input_ids"]
    for row, (prompt, response) in enumerate(zip(PROMPTS, RESPONSES, strict=True)):
        conversation = chat_messages(prompt, response)
        full = list(tokenizer.apply_chat_template(conversation, tokenize=True)["input_ids"])
        # The rendering, less the whitespace the template writes after the turn's end token ...
        assert full[: len(ours[row])] == list(ours[row])
        assert tokenizer.decode(full[len(ours[row]) :]).strip() == ""
        assert tokenizer.decode(ours[row][-1:]).strip() != ""
        # ... which is what the exported tokenizer's template renders; a generation prompt is kept.
        assert list(exported.apply_chat_template(conversation, tokenize=True)["input_ids"]) == list(ours[row])
        generation = dict(tokenize=True, add_generation_prompt=True)
        assert exported.apply_chat_template(conversation[:-1], **generation) == tokenizer.apply_chat_template(
            conversation[:-1], **generation
        )
        if tokenizer.bos_token_id is not None:
            assert list(ours[row]).count(tokenizer.bos_token_id) == 1  # the template's BOS, no second one


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("side", ["right", "left"])
def test_last_token_pooling_equals_the_state_read_by_hand_under_either_padding_side(
    tiny_decoders, family, side
):
    encoder = _encoder(tiny_decoders[family])
    encoder.tokenizer.padding_side = side
    ids = encoder.tokenize(PROMPTS, RESPONSES)[0]["input_ids"]
    assert len({len(row) for row in ids}) > 1  # the batch really pads
    embeddings = encoder.encode(PROMPTS, RESPONSES)
    for row in range(len(PROMPTS)):
        np.testing.assert_allclose(
            embeddings[row], _state_by_hand(tiny_decoders[family], ids[row]), atol=2e-5
        )


def test_any_hidden_layer_can_be_read(tiny_decoders):
    directory = tiny_decoders["llama"]
    encoder = _encoder(directory, layer=1)
    ids = encoder.tokenize(PROMPTS[:2], RESPONSES[:2])[0]["input_ids"]
    embeddings = encoder.encode(PROMPTS[:2], RESPONSES[:2])
    for row in range(2):
        np.testing.assert_allclose(embeddings[row], _state_by_hand(directory, ids[row], layer=1), atol=2e-5)
    assert not np.allclose(embeddings, _encoder(directory).encode(PROMPTS[:2], RESPONSES[:2]), atol=1e-3)
    with pytest.raises(ValueError, match="layer 7 does not exist; the model has 2 blocks"):
        _encoder(directory, layer=7)


def test_a_reward_model_checkpoint_encodes_through_its_base_model(tmp_path, tiny_decoder_factory):
    directory = tiny_decoder_factory(tmp_path / "rm", "llama", sequence_classification=True, seed=3)
    reward_model = AutoModelForSequenceClassification.from_pretrained(directory).eval()
    encoder = _encoder(directory)
    assert type(encoder.model).__name__ == "LlamaModel" and encoder.decoder_only
    ids = encoder.tokenize(PROMPTS[:1], RESPONSES[:1])[0]["input_ids"][0]
    with torch.no_grad():
        expected = reward_model.model(torch.tensor([ids])).last_hidden_state[0, -1].numpy()
    np.testing.assert_allclose(encoder.encode(PROMPTS[:1], RESPONSES[:1])[0], expected, atol=2e-5)


def test_the_cache_identity_covers_pooling_layer_text_mode_and_template(tiny_decoders, tmp_path):
    directory = tiny_decoders["llama"]
    changed = tmp_path / "other-template"
    shutil.copytree(directory, changed)
    tokenizer = AutoTokenizer.from_pretrained(changed)
    tokenizer.chat_template = tokenizer.chat_template.replace("<|eot_id|>", "<|eot_id|> <|eot_id|>")
    tokenizer.save_pretrained(changed)
    keys = {
        "default": _encoder(directory).identity_key,
        "mean": _encoder(directory, pooling="mean").identity_key,
        "layer": _encoder(directory, layer=-2).identity_key,
        "pair": _encoder(directory, text_mode="pair").identity_key,
        "normalized": _encoder(directory, normalize=True).identity_key,
    }
    template = _encoder(changed)
    assert len(set(keys.values())) == len(keys)
    assert template.identity["chat_template"] != _encoder(directory).identity["chat_template"]
    # two poolings of one model never share a cache entry
    last, mean = _encoder(directory), _encoder(directory, pooling="mean")
    first = embed_rows(PROMPTS, RESPONSES, last, open_cache(last, tmp_path / "cache"))
    second = embed_rows(PROMPTS, RESPONSES, mean, open_cache(mean, tmp_path / "cache"))
    assert mean.rows_encoded == len(PROMPTS) and not np.allclose(first, second, atol=1e-3)


def test_batches_are_ordered_by_tokens_and_truncation_is_counted(tiny_decoders, caplog):
    encoder = _encoder(tiny_decoders["llama"], max_length=12)
    # Characters and tokens disagree: one long unknown word is a single token.
    prompts, responses = ["a", "a"], ["supercalifragilisticexpialidocious", "a a a a a"]
    assert encoder.encoding_order(prompts, responses).tolist() == [1, 0]
    before = encoder.rows_truncated
    with caplog.at_level("WARNING"):
        encoder.encode(PROMPTS, RESPONSES)
    truncated = int((encoder.token_lengths(PROMPTS, RESPONSES) > 12).sum())
    assert encoder.rows_truncated - before == truncated > 0
    assert f"{truncated} of 5 rows are longer than max_length=12" in caplog.text
    assert max(len(row) for row in encoder.tokenize(PROMPTS, RESPONSES)[0]["input_ids"]) == 12


def test_a_batch_that_runs_out_of_memory_is_split_and_retried(tiny_decoders, monkeypatch, caplog):
    encoder = _encoder(tiny_decoders["qwen2"])
    expected = encoder.encode(PROMPTS, RESPONSES)
    real = encoder.embed
    sizes = []

    def small_batches_only(prompts, responses):
        sizes.append(len(responses))
        if len(responses) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(prompts, responses)

    monkeypatch.setattr(encoder, "embed", small_batches_only)
    with caplog.at_level("WARNING"):
        np.testing.assert_allclose(encoder.encode(PROMPTS, RESPONSES), expected, atol=2e-5)
    assert sizes[0] == 5 and max(s for s in sizes if s <= 2) == 2
    assert "a batch of 5 rows ran out of GPU memory" in caplog.text


def test_chat_mode_without_a_template_is_refused(tmp_path, tiny_decoders):
    directory = tmp_path / "no-template"
    shutil.copytree(tiny_decoders["llama"], directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    tokenizer.chat_template = None
    tokenizer.save_pretrained(directory)
    for name in ("chat_template.jinja", "chat_template.json"):
        (directory / name).unlink(missing_ok=True)
    assert _encoder(directory).config.text_mode == "pair"  # auto falls back
    with pytest.raises(ValueError, match="text_mode='chat' needs a tokenizer with a chat template"):
        _encoder(directory, text_mode="chat")


@pytest.mark.slow
def test_two_processes_embed_what_one_process_embeds(tiny_decoders, tmp_path):
    import json
    import os
    import subprocess
    import sys

    from pyro_irm.data import write_records

    rng = np.random.default_rng(0)
    words = "the a reward model copies code answer short long helpful wrong".split()
    sizes = rng.integers(1, 30, size=50)
    rows = [{"prompt": f"question {i % 9}", "response": " ".join(rng.choice(words, size=int(sizes[i])))}
            for i in range(50)]  # fmt: skip
    log = write_records(tmp_path / "log.jsonl", rows)
    outputs = {}
    for devices in (1, 2):
        out = tmp_path / f"devices{devices}.npy"
        command = [
            sys.executable, "-m", "pyro_irm.cli", "embed", str(log), "--out", str(out), "--quiet",
            "--encoder", str(tiny_decoders["llama"]), "--encoder-device", "cpu", "--encoder-batch-size", "4",
            "--devices", str(devices), "--cache-dir", str(tmp_path / f"cache{devices}"),
        ]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        outputs[devices] = np.load(out)
        assert json.loads(out.with_suffix(".json").read_text())["encoder"]["pooling"] == "last"
    # The processes form exactly the batches one process forms, so the embeddings agree to the bit
    # pattern of the same kernels; allow float32 rounding.
    np.testing.assert_allclose(outputs[2], outputs[1], atol=1e-6)
    keys = (tmp_path / "cache2").glob("*/keys.bin")
    assert [k.stat().st_size // 16 for k in keys] == [50]  # each row encoded once, by one of the two


def test_a_conversational_row_is_rendered_whole_by_the_chat_template(tiny_decoders, tmp_path):
    from pyro_irm.data import write_records
    from pyro_irm.data.logs import LogSchema, read_log
    from pyro_irm.runs import embed_log

    conversation = [
        {"role": "user", "content": "what is two plus two"},
        {"role": "assistant", "content": "four"},
        {"role": "user", "content": "and five"},
        {"role": "assistant", "content": "it depends"},
    ]
    path = write_records(
        tmp_path / "chat.jsonl", [{"messages": conversation}, {"prompt": "a", "response": "b"}]
    )
    log = read_log(path, LogSchema(actions=()))
    assert (
        log.prompts[0] == "user: what is two plus two\n\nassistant: four\n\nuser: and five"
    )  # the text rule
    encoder = _encoder(tiny_decoders["llama"], max_length=512)
    ids = encoder.tokenize(log.encoder_prompts, log.responses)[0]["input_ids"][0]
    expected = AutoTokenizer.from_pretrained(tiny_decoders["llama"]).apply_chat_template(
        conversation, tokenize=True
    )
    assert list(ids) == list(expected["input_ids"])
    embeddings, _ = embed_log(log, encoder=encoder, cache_root=tmp_path / "cache")
    np.testing.assert_allclose(embeddings[0], _state_by_hand(tiny_decoders["llama"], ids), atol=2e-5)
    # the same words as one text prompt are another row, with another cache entry
    flat, _ = embed_log(read_log(write_records(tmp_path / "flat.jsonl", [
        {"prompt": log.prompts[0], "response": "it depends"}]), LogSchema(actions=())),
        encoder=encoder, cache_root=tmp_path / "cache")  # fmt: skip
    assert not np.allclose(flat[0], embeddings[0], atol=1e-3)


def test_a_model_placed_by_accelerate_encodes_as_one_loaded_whole(tiny_decoders, monkeypatch):
    import transformers

    asked = []
    real = transformers.AutoModel.from_pretrained

    def recording(*args, **kwargs):
        asked.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", recording)
    placed = _encoder(tiny_decoders["mistral"], device_map="auto")  # accelerate; here every layer on the CPU
    assert asked[-1]["device_map"] == "auto" and asked[-1]["dtype"] == torch.float32
    whole = _encoder(tiny_decoders["mistral"])
    assert "device_map" not in asked[-1]
    np.testing.assert_allclose(placed.encode(PROMPTS, RESPONSES), whole.encode(PROMPTS, RESPONSES), atol=1e-6)
    with pytest.raises(ValueError, match="device_map must be 'auto' or unset"):
        EncoderConfig(device_map="balanced_low_0")


def test_a_long_chat_row_loses_its_oldest_prompt_turns_first_and_keeps_the_template(tiny_decoders, caplog):
    encoder = _encoder(tiny_decoders["llama"], max_length=40)
    turns = [
        {"role": "user", "content": "what is two plus two " * 4},
        {"role": "assistant", "content": "four " * 6},
        {"role": "user", "content": "is it good"},
    ]
    whole = encoder.tokenize([turns], ["a b"], truncate=False)[0]["input_ids"][0]
    last_turn = encoder.tokenize([turns[-1:]], ["a b"], truncate=False)[0]["input_ids"][0]
    assert len(whole) > 40 >= len(last_turn)
    # The oldest exchange goes whole: what is read is the template's rendering of what is left.
    assert encoder.tokenize([turns], ["a b"])[0]["input_ids"][0] == last_turn
    # One long turn: the start of its text goes, the template's opening and the response stay.
    long_prompt = "the answer is " + "very " * 30 + "short"
    cut = encoder.tokenize([long_prompt], ["a b"])[0]["input_ids"][0]
    assert len(cut) <= 40 and cut[0] == whole[0] and cut[-4:] == last_turn[-4:]
    assert encoder.tokenizer.decode(cut).count("short") == 1 and "answer" not in encoder.tokenizer.decode(cut)
    # A response that overflows alone: its end is read (the last 40 tokens), and the row is named.
    with caplog.at_level("WARNING"):
        encoder.encode(["q", "q", long_prompt], ["b", "a " * 60, "a b"])
    assert "2 of 3 rows are longer than max_length=40" in caplog.text
    assert "in 1 of them the response alone overflows and only its end is read: rows 2" in caplog.text
    assert encoder.responses_cut == 1
    overflowing = encoder.tokenize(["q"], ["a " * 60], truncate=False)[0]["input_ids"][0]
    assert encoder.tokenize(["q"], ["a " * 60])[0]["input_ids"][0] == overflowing[-40:]


def test_a_batch_holds_at_most_batch_tokens_so_long_rows_go_in_small_batches(tiny_decoders):
    encoder = _encoder(tiny_decoders["llama"], max_length=64, batch_tokens=96)
    responses = ["a " * 50, "a " * 40, "b", "a b", "a", "b b", "a a a"]
    lengths = encoder.token_lengths(["q"] * 7, responses)
    batches = encoder.batches(["q"] * 7, responses)
    assert sorted(np.concatenate(batches).tolist()) == list(range(7))  # every row once
    for rows in batches:
        longest = min(int(lengths[rows].max()), 64)
        assert len(rows) <= 8 and (len(rows) == 1 or len(rows) * longest <= 96)
    assert len(batches[0]) == 1 and len(batches[-1]) > 2  # the longest alone, the short ones together
    whole = encoder.encode(["q"] * 7, responses)
    config = EncoderConfig(model=str(tiny_decoders["llama"]), device="cpu", batch_size=1, max_length=64)
    single = TextEncoder(config).encode(["q"] * 7, responses)
    np.testing.assert_allclose(whole, single, atol=2e-5)  # the batching changes nothing read
