"""The identification check of a one-channel fit with context, and its remedies.

Worlds built here: a preference read from the embedding, engagement driven by a context column,
which the embedding either encodes (the column is a function of it, up to a little noise: nothing
but the networks decides which side acting goes to) or does not (an independent column, such as a
display position: the data decide)."""

import warnings
from dataclasses import replace

import pytest
import torch

from pyro_irm import FeedbackData, ModelConfig, TrainConfig, fit
from pyro_irm.channels import ChannelSpec
from pyro_irm.inference.identification import MIN_CONTEXT_INFORMATION
from pyro_irm.models.identifiability import IdentifiabilityWarning

FAST = dict(max_epochs=25, progress=False)
pytestmark = pytest.mark.slow  # each test fits on 6,000 rows


def world(rows: int, seed: int, encoded: bool, second_channel: bool = False, labels: bool = False):
    g = torch.Generator().manual_seed(seed)
    e = torch.randn(rows, 16, generator=g)
    r = torch.bernoulli(torch.sigmoid(2 * (e[:, 0] + 0.5 * e[:, 1])), generator=g)
    c = (
        e[:, 2] + 0.4 * e[:, 0] + 0.1 * torch.randn(rows, generator=g)
        if encoded
        else torch.randn(rows, generator=g)
    )
    o = torch.bernoulli(torch.sigmoid(-0.5 + 2.0 * c), generator=g)
    actions = r * o
    channels = None
    if second_channel:  # engaged users who did not prefer the response regenerate it
        regenerated = o * (1 - r) * torch.bernoulli(torch.full((rows,), 0.6), generator=g)
        actions, channels = (
            torch.stack([actions, regenerated], 1),
            (ChannelSpec("copied"), ChannelSpec("regen", "negative")),
        )
    label = torch.where(torch.rand(rows, generator=g) < 0.05, r, float("nan")) if labels else None
    context = ((c - c.mean()) / c.std())[:, None]
    return FeedbackData(
        e, actions, context=context, context_names=("length",), channels=channels, labels=label
    )


def _fit(data, **options):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", IdentifiabilityWarning)
        result = fit(data, TrainConfig(**FAST, fit_labels=data.labels is not None), ModelConfig(**options))
    return result, [str(w.message) for w in caught if issubclass(w.category, IdentifiabilityWarning)]


@pytest.fixture(scope="module")
def encoded():
    return world(6000, 0, encoded=True)


def test_a_context_the_embedding_encodes_is_found_out_with_numbers_and_remedies(encoded):
    result, warned = _fit(encoded)
    check = result.identification
    assert check is not None and not check.identified
    assert check.context_r2["length"] > 0.95 and check.context_information["length"] < MIN_CONTEXT_INFORMATION
    message = next(m for m in warned if "do not decide" in m)
    assert "length (R^2 0.9" in message and "nats per row of its own" in message
    for remedy in ("--negative-action-col", "--fit-labels", "--propensity-features context",
                   "--engagement-prior-weight"):  # fmt: skip
        assert remedy in message
    # each named with its measured effect; those measured not to help are not named
    assert message.count("AUC") >= len(check.remedies) and "length bias" in message
    assert "--erase-context-from-reward" not in message and "--reward-context-penalty" not in message


def test_a_context_of_its_own_decides_the_split_and_does_not_warn():
    result, warned = _fit(world(6000, 0, encoded=False))
    check = result.identification
    assert check.identified and check.context_r2["length"] < 0.05
    assert check.context_information["length"] > MIN_CONTEXT_INFORMATION
    assert not any("do not decide" in m for m in warned)


@pytest.mark.parametrize("evidence", ["second_channel", "labels"])
def test_a_second_channel_or_labels_decide_it_and_the_check_says_so(evidence):
    result, warned = _fit(world(6000, 0, encoded=True, **{evidence: True}))
    assert result.identification.identified and result.identification.other_evidence
    assert not any("do not decide" in m for m in warned)


def test_erasing_the_context_folds_into_a_plain_reward_that_no_longer_reads_it_linearly(encoded, tmp_path):
    from pyro_irm.models import RewardModel

    default, _ = _fit(encoded)
    erased, warned = _fit(encoded, erase_context_from_reward=True)
    # the remedy decides the split by assumption: its figures are kept, and it does not warn
    assert erased.identification.assumed == ("the context erased from the reward's input",)
    assert not any("do not decide" in m for m in warned)
    keys = set(erased.reward_model.model.state_dict())
    assert not any("parametrizations" in k for k in keys) and keys == set(
        default.reward_model.model.state_dict()
    )
    reloaded = RewardModel.load(erased.reward_model.save(tmp_path / "erased"))
    assert torch.equal(reloaded.score(encoded.embeddings), erased.reward_model.score(encoded.embeddings))

    def follows_context(result):
        scores = result.reward_model.score(encoded.embeddings)
        return torch.corrcoef(torch.stack([scores, encoded.context[:, 0]]))[0, 1].abs().item()

    assert follows_context(erased) < 0.1 < follows_context(default)


def test_the_engagement_prior_pulls_engagement_toward_the_exposure(encoded):
    from pyro_irm.inference.remedies import exposure_prior

    exposure = exposure_prior(encoded, encoded.actions, torch.arange(len(encoded)), power=0.5)

    def distance(result):
        model = result.reward_model.model
        with torch.no_grad():
            engaged = torch.sigmoid(model.propensity_logits(encoded.embeddings, encoded.context)).mean(-1)
        return (engaged - exposure).abs().mean().item()

    free, _ = _fit(encoded)
    pulled, _ = _fit(encoded, engagement_prior_weight=5.0)
    assert distance(pulled) < 0.7 * distance(free)


def test_the_command_line_warns_with_the_figures_and_writes_them_to_metrics_and_the_report(
    encoded, tmp_path, capsys
):
    import json

    import numpy as np

    from pyro_irm.cli import main
    from pyro_irm.data.logs import write_records

    rows = [{"prompt": f"p{i}", "response": f"r{i}", "copied": float(encoded.actions[i]),
             "length": float(encoded.context[i, 0])} for i in range(len(encoded))]  # fmt: skip
    write_records(tmp_path / "log.jsonl", rows)
    np.save(tmp_path / "e.npy", encoded.embeddings.numpy())
    fit = ["fit", str(tmp_path / "log.jsonl"), "--embeddings", str(tmp_path / "e.npy"), "--action-col",
           "copied", "--context-col", "length", "--max-epochs", "25", "--out", str(tmp_path / "run"),
           "--quiet"]  # fmt: skip
    with pytest.warns(IdentifiabilityWarning, match="do not decide"):
        assert main(fit) == 0
    check = json.loads((tmp_path / "run" / "metrics.json").read_text())["identification"]
    assert not check["identified"] and check["context_r2"]["length"] > 0.95
    assert main(["report", str(tmp_path / "run"), "--embeddings", str(tmp_path / "e.npy")]) == 0
    text = (tmp_path / "run" / "report" / "report.md").read_text()
    assert "## Does the data decide the preference/engagement split?" in text and "**Not decided:**" in text


class _ReadsOneColumn(torch.nn.Module):
    """An engagement network that declares it reads the embedding and one named context column (the
    features are the embedding, then the context, under propensity_features='both')."""

    def __init__(self, in_dim, column, declared):
        super().__init__()
        self.in_dim, self.column, self.declared = in_dim, column, declared
        self.reads = declared
        self.net = torch.nn.Linear(16, 1)
        self.slope = torch.nn.Parameter(torch.zeros(()))

    def forward(self, features):
        logit = self.net(features[:, :16])[:, 0] + self.slope * features[:, self.column]
        return logit[:, None].expand(-1, 2)


def _two_columns(rows=1500):
    """``world`` with a second context column, the display position, which the embedding does not encode."""
    data = world(rows, 0, encoded=True)
    position = torch.randn(rows, 1, generator=torch.Generator().manual_seed(5))
    return replace(data, context=torch.cat([data.context, position], 1), context_names=("length", "position"))


@pytest.mark.parametrize("declared", [("embedding", "position"), ("embedding", "length")])
def test_the_check_reads_only_the_columns_the_engagement_network_declares(declared):
    from pyro_irm.models import ImplicitFeedbackModel

    data = _two_columns()
    config = ModelConfig(propensity_features="both")
    column = 16 + data.context_names.index(declared[1])
    model = ImplicitFeedbackModel(
        16, 2, config, data.channels, propensity=_ReadsOneColumn(18, column, declared)
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", IdentifiabilityWarning)
        result = fit(data, TrainConfig(max_epochs=3, progress=False), config, model=model)
    assert set(result.identification.context_r2) == {declared[1]}
    assert any("do not decide" in str(w.message) for w in caught) == (declared[1] == "length")
    # the length column is encoded, the position is not: only the former can leave the split open
    assert (result.identification.context_r2[declared[1]] > 0.9) == (declared[1] == "length")


def test_an_engagement_network_that_reads_a_column_the_data_lack_is_refused():
    from pyro_irm.models import ImplicitFeedbackModel

    data = world(200, 0, encoded=True)
    config = ModelConfig(propensity_features="both")
    engagement = _ReadsOneColumn(17, 16, ("embedding", "position"))
    model = ImplicitFeedbackModel(16, 1, config, data.channels, propensity=engagement)
    with pytest.raises(ValueError, match=r"_ReadsOneColumn declares it reads position.*columns are: length"):
        fit(data, TrainConfig(max_epochs=1, progress=False), config, model=model)


def test_a_declared_context_only_engagement_counts_as_an_assumption_and_as_evidence():
    from pyro_irm.inference.svi import _assumed
    from pyro_irm.models.identifiability import identifying_assumptions

    embedding_only = ModelConfig(propensity_features="embedding")
    context_only = _ReadsOneColumn(17, 16, ("length",))
    assert _assumed(embedding_only) == ()
    assert _assumed(embedding_only, context_only) == ("engagement on the context alone",)
    assert identifying_assumptions(embedding_only, 1) == []
    assert identifying_assumptions(embedding_only, 1, engagement=context_only) == [
        "engagement features: g sees context column(s) that f does not"
    ]


def test_the_context_penalty_decorrelates_the_reward_from_the_context_and_is_an_assumption(encoded):
    def follows_context(result):
        scores = result.reward_model.score(encoded.embeddings)
        return torch.corrcoef(torch.stack([scores, encoded.context[:, 0]]))[0, 1].abs().item()

    default, _ = _fit(encoded)
    penalized, warned = _fit(encoded, reward_context_penalty=10.0)
    assert follows_context(penalized) < 0.1 < follows_context(default)
    assert penalized.identification.assumed == ("the reward decorrelated from the context (weight 10)",)
    assert not any("do not decide" in m for m in warned)
    with pytest.raises(ValueError, match="reward_context_penalty.*--context-col"):
        fit(replace(encoded, context=None, context_names=None), TrainConfig(max_epochs=1, progress=False),
            ModelConfig(reward_context_penalty=1.0))  # fmt: skip


def test_a_model_whose_engagement_declares_nothing_fits_unnamed_context_columns():
    from pyro_irm.models import ImplicitFeedbackModel

    data = replace(world(300, 0, encoded=False), context_names=None)
    config = ModelConfig(propensity_features="both")
    model = ImplicitFeedbackModel(16, 1, config, data.channels)
    result = fit(data, TrainConfig(max_epochs=1, progress=False), config, model=model)
    assert set(result.identification.context_r2) == {"context_0"}
