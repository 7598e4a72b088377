"""Fitting the multi-channel model on simulated chat logs: declared channels, negatives, users and
labels change the answer the way they should."""

from dataclasses import replace

import pytest
import torch

from pyro_irm import TrainConfig, fit
from pyro_irm.analysis.metrics import auc
from pyro_irm.channels import ChannelSpec
from pyro_irm.data.chatlog_simulation import CHATLOG_CHANNELS, ChatLogConfig, simulate_chatlog
from pyro_irm.models.identifiability import IdentifiabilityWarning

FAST = dict(progress=False, max_epochs=40, inference="fused")


@pytest.fixture(scope="module")
def chatlog():
    train = simulate_chatlog(4000, embedding_dim=16, config=ChatLogConfig(seed=0, label_fraction=0.02))
    test = simulate_chatlog(3000, embedding_dim=16, config=ChatLogConfig(seed=1))
    return train, test


def _auc(result, test) -> float:
    return auc(test.truth.preference, result.reward_model.score(test.embeddings))


def test_evaluation_labels_never_enter_a_fit_without_fit_labels(chatlog):
    train, _ = chatlog
    config = TrainConfig(max_epochs=2, progress=False)
    with_labels = fit(train, config).reward_model.score(train.embeddings[:50])
    without = fit(replace(train, labels=None), config).reward_model.score(train.embeddings[:50])
    torch.testing.assert_close(with_labels, without, atol=0, rtol=0)


def test_fit_labels_changes_the_fit_and_needs_labels(chatlog):
    train, _ = chatlog
    config = TrainConfig(max_epochs=2, progress=False, fit_labels=True)
    with_labels = fit(train, config).reward_model.score(train.embeddings[:50])
    plain = fit(train, replace(config, fit_labels=False)).reward_model.score(train.embeddings[:50])
    assert not torch.allclose(with_labels, plain)
    with pytest.raises(ValueError, match="no explicit labels"):
        fit(replace(train, labels=None), config)
    with pytest.raises(ValueError, match="only method='implicitrm'"):
        fit(train, replace(config, method="naive"))


@pytest.mark.slow
def test_declared_channels_beat_naive_and_the_or_ed_channel(chatlog):
    train, test = chatlog
    channels = fit(train, TrainConfig(**FAST))
    naive = fit(train, TrainConfig(method="naive", **FAST))
    single = replace(train, actions=train.action, channels=None, users=None)
    # one channel whose propensity follows length, which the embedding encodes: the check warns
    with pytest.warns(IdentifiabilityWarning, match="do not decide"):
        or_ed = fit(single, TrainConfig(**FAST))
    scores = {name: _auc(r, test) for name, r in [("channels", channels), ("naive", naive), ("or", or_ed)]}
    assert scores["channels"] > scores["naive"] + 0.05, scores
    assert scores["channels"] > scores["or"] + 0.05, scores


@pytest.mark.slow
def test_a_negative_channel_declared_positive_is_worse_than_declared_right(chatlog):
    train, test = chatlog
    right = fit(train, TrainConfig(**FAST))
    wrong_channels = tuple(
        ChannelSpec(c.name, "positive", c.kind) if c.name == "regenerated" else c for c in CHATLOG_CHANNELS
    )
    wrong = fit(replace(train, channels=wrong_channels), TrainConfig(**FAST))
    keep = [0, 1, 3]
    left_out = fit(
        replace(train, actions=train.actions[:, keep], channels=tuple(CHATLOG_CHANNELS[k] for k in keep)),
        TrainConfig(**FAST),
    )
    scores = {"right": _auc(right, test), "wrong": _auc(wrong, test), "left_out": _auc(left_out, test)}
    assert scores["right"] > scores["wrong"] + 0.05, scores
    assert scores["right"] > scores["left_out"] + 0.01, scores
