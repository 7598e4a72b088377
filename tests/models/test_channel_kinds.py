"""Channel kinds beyond binary and continuous: counts and ratings identify the groups without a
binary action, a missing cell is left out of its row's likelihood exactly, and the schema and the
command line reach every kind."""

import numpy as np
import pytest
import torch

from pyro_irm import FeedbackData, TrainConfig, fit
from pyro_irm.analysis.metrics import auc
from pyro_irm.channels import ChannelSpec
from pyro_irm.cli import main
from pyro_irm.data.logs import LogFormatError, LogSchema, read_log
from pyro_irm.models import ImplicitFeedbackModel, ModelConfig

pytestmark = pytest.mark.filterwarnings("ignore::pyro_irm.models.identifiability.IdentifiabilityWarning")


def _world(rows=3000, dim=8, seed=0):
    """Preference from the embedding; engaged users (by an unrelated draw) rate 1-5, higher when
    they prefer, and leave 0-6 reactions; silent rows have no rating (NaN) and few reactions."""
    rng = np.random.default_rng(seed)
    embeddings = rng.normal(size=(rows, dim)).astype(np.float32)
    preference = rng.random(rows) < 1 / (1 + np.exp(-2 * embeddings[:, 0]))
    engaged = rng.random(rows) < 0.5
    rating = np.where(preference, rng.choice([3, 4, 5], rows, p=[0.2, 0.4, 0.4]),
                      rng.choice([1, 2, 3], rows, p=[0.4, 0.4, 0.2])).astype(np.float32)  # fmt: skip
    rating[~engaged] = np.nan
    reactions = rng.poisson(np.where(engaged, np.where(preference, 3.0, 0.5), 0.1)).astype(np.float32)
    return embeddings, preference, rating, reactions


@pytest.mark.parametrize("kind", ["ordinal", "count"])
def test_a_rating_or_a_count_alone_identifies_the_preference(kind):
    embeddings, preference, rating, reactions = _world()
    column = rating if kind == "ordinal" else reactions
    data = FeedbackData(embeddings[:2000], column[:2000], channels=(ChannelSpec("signal", kind=kind),))
    result = fit(data, TrainConfig(max_epochs=25, progress=False, inference="fused"))
    score = result.reward_model.score(embeddings[2000:])
    truth = auc(preference[2000:], embeddings[2000:, 0])  # the true logit's AUC, the ceiling
    assert auc(preference[2000:], score) > max(0.75, truth - 0.06), truth  # a constant reward has 0.5


def test_a_missing_cell_is_marginalized_exactly():
    torch.manual_seed(0)
    channels = (ChannelSpec("copied"), ChannelSpec("stars", kind="ordinal", levels=4))
    model = ImplicitFeedbackModel(3, 0, ModelConfig(), channels)
    embeddings = torch.randn(1, 3).repeat(5, 1)
    actions = torch.tensor([[1.0, float("nan")], [1.0, 1.0], [1.0, 2.0], [1.0, 3.0], [1.0, 4.0]])
    log_marginal = model.log_marginal(embeddings, actions)
    # p(copied) = sum over the ratings of p(copied, stars): the missing row is the sum of the others.
    torch.testing.assert_close(log_marginal[0], torch.logsumexp(log_marginal[1:], 0), atol=1e-5, rtol=0)


def test_the_amortized_guide_reads_a_missing_cell_and_its_elbo_stays_exact():
    """The guide's network sees an empty cell as 0 (not NaN, which would poison every row of the
    minibatch); with the guide at the exact posterior, its held-out ELBO is the exact marginal."""
    from pyro_irm.inference.objectives import heldout_elbo
    from pyro_irm.models import Rows, StratificationGuide

    torch.manual_seed(0)
    channels = (ChannelSpec("copied"), ChannelSpec("stars", kind="ordinal", levels=4))
    model = ImplicitFeedbackModel(3, 0, ModelConfig(), channels)
    guide = StratificationGuide(model)
    embeddings = torch.randn(6, 3)
    actions = torch.tensor(
        [[1.0, float("nan")], [0.0, float("nan")], [1.0, 2.0], [0.0, 3.0], [1.0, 4.0], [0, 1]]
    )
    with torch.no_grad():
        q = guide.posterior_groups(embeddings, actions)
    assert torch.isfinite(q).all() and torch.allclose(q.sum(-1), torch.ones(6))
    guide.group_logits = lambda e, y, c, o=None: model.group_log_joint(e, y, c, o)
    bound = heldout_elbo(model, guide, Rows(embeddings, actions), torch.arange(6))
    assert bound == pytest.approx(model.log_marginal(embeddings, actions).mean().item(), abs=1e-5)


def test_the_schema_reads_every_kind_and_counts_empty_cells(tmp_path, capsys):
    embeddings, preference, rating, reactions = _world(rows=400)
    lines = ["prompt,response,copied,stars,reactions"]
    for i in range(400):
        stars = "" if np.isnan(rating[i]) else str(int(rating[i]))
        lines.append(f"q{i // 2},r{i},{int(preference[i] and reactions[i] > 1)},{stars},{int(reactions[i])}")
    (tmp_path / "log.csv").write_text("\n".join(lines) + "\n")
    schema = dict(actions=("copied",), ordinal_actions=("stars:5",), count_actions=("reactions",))
    with pytest.raises(LogFormatError, match=r"row \d+, field 'stars': is empty"):
        read_log(tmp_path / "log.csv", LogSchema(**schema, missing_actions="refuse"))
    log = read_log(tmp_path / "log.csv", LogSchema(**schema))  # empty cells are marginalized by default
    assert [c.kind for c in log.channels] == ["binary", "count", "ordinal"] and log.channels[2].levels == 5
    empty = int(np.isnan(rating).sum())
    assert log.report.missing == (("stars", empty),) and f"stars {empty}" in log.report.summary()
    lines[3] = lines[3].rsplit(",", 1)[0] + ",2.5"  # half a reaction
    (tmp_path / "bad.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(
        LogFormatError, match=r"row 3, field 'reactions': 2.5: a count channel takes whole numbers"
    ):
        read_log(tmp_path / "bad.csv", LogSchema(**schema, missing_actions="marginalize"))
    np.save(tmp_path / "e.npy", embeddings)
    data = ["--embeddings", str(tmp_path / "e.npy")]
    fit_command = ["fit", str(tmp_path / "log.csv"), *data, "--action-col", "copied", "--ordinal-action-col",
                   "stars:5", "--count-action-col", "reactions", "--missing-actions", "marginalize",
                   "--out", str(tmp_path / "run"), "--max-epochs", "5"]  # fmt: skip
    assert main(fit_command) == 0, capsys.readouterr().err
    assert f"empty action cells, left out of their rows' likelihood: stars {empty}" in capsys.readouterr().err
    scores = tmp_path / "groups.jsonl"
    score = [
        "score",
        str(tmp_path / "run"),
        str(tmp_path / "log.csv"),
        *data,
        "--groups",
        "--out",
        str(scores),
    ]
    assert main([*score, "--quiet"]) == 0
    assert len(scores.read_text().splitlines()) == 400


def test_a_channel_that_ignores_engagement_is_read_as_identifying_evidence():
    import warnings

    from pyro_irm.models import ModelConfig
    from pyro_irm.models.channel import AnnotatorChannel
    from pyro_irm.models.identifiability import IdentifiabilityWarning, warn_if_unidentified

    config = ModelConfig()
    copied, rater = ChannelSpec("copied"), ChannelSpec("rater", kind="annotation")
    with pytest.warns(IdentifiabilityWarning, match="a rater's verdict, which ignores engagement"):
        warn_if_unidentified(config, 0, [copied])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # by its kind's declaration, and by a component's own (a binary column read as a rater)
        assert "ignores engagement (rater)" in warn_if_unidentified(config, 0, [copied, rater])[0]
        component = AnnotatorChannel(ChannelSpec("rater"))
        assert "ignores engagement (rater)" in warn_if_unidentified(config, 0, [copied, component])[0]
