"""Changing the generative assumptions from a module of one's own: a registered variant of an
estimator fits exactly as the original; a user's engagement network and channel, with settings of
their own, save and reload by class path (in this process and in a fresh one, from the CLI with
``--plugin``); same-named classes of two packages never collide; what cannot work is refused before
a fit starts."""

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from pyro_irm import TrainConfig, fit
from pyro_irm.cli import main
from pyro_irm.data.chatlog_simulation import ChatLogConfig, simulate_chatlog
from pyro_irm.data.logs import write_records
from pyro_irm.estimators import ESTIMATORS, ImplicitRM, register
from pyro_irm.models import ImplicitFeedbackModel, RewardModel
from pyro_irm.models.channel import CHANNEL_TYPES, register_channel

pytestmark = pytest.mark.filterwarnings("ignore::pyro_irm.models.identifiability.IdentifiabilityWarning")

FAST = dict(progress=False, max_epochs=3)

# A user's module: an engagement network monotone in one named context column, a dwell channel
# with a setting of its own, and an estimator that builds the model with them.
PLUGIN = '''
import torch
from torch import nn

from pyro_irm.estimators import ImplicitRM, register
from pyro_irm.models import ImplicitFeedbackModel
from pyro_irm.models.channel import LogNormalChannel
from pyro_irm.models.implicit import propensity_input_dim


class MonotoneEngagement(nn.Module):
    """g: an MLP of the features plus a non-negative slope on context column ``column``."""

    def __init__(self, in_dim, column=0, hidden=8):
        super().__init__()
        self.in_dim, self.column, self.hidden = in_dim, column, hidden
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        self.raw_slope = nn.Parameter(torch.zeros(()))

    def forward(self, features):
        logit = self.net(features)[:, 0] + nn.functional.softplus(self.raw_slope) * features[:, self.column]
        return logit[:, None].expand(-1, 2)


class ScaledDwell(LogNormalChannel):
    """Dwell in units of ``unit`` seconds (a setting that must survive a reload)."""

    def __init__(self, spec, feature_dim=0, unit=1.0):
        super().__init__(spec, feature_dim)
        self.unit = unit

    def transform(self, values):
        return super().transform(values / self.unit)


class WithMonotoneEngagement(ImplicitRM):
    def build_model(self, embedding_dim, context_dim, config, channels=None, num_users=0, context_names=None):
        in_dim = propensity_input_dim(config, embedding_dim, context_dim)
        # the context column named "length", after the embedding's features (told by its name)
        column = in_dim - context_dim + (context_names or ("length",)).index("length")
        return ImplicitFeedbackModel(
            embedding_dim, context_dim, config, channels, num_users,
            propensity=MonotoneEngagement(in_dim, column=column, hidden=6),
        )


register(WithMonotoneEngagement("implicitrm_monotone", "ImplicitRM, engagement monotone in a context column"))
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """The user's module on the path, imported; the registry and the module table restored after."""
    import importlib

    (tmp_path / "my_assumptions.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    estimators = dict(ESTIMATORS)
    module = importlib.import_module("my_assumptions")
    yield module
    ESTIMATORS.clear()
    ESTIMATORS.update(estimators)
    sys.modules.pop("my_assumptions", None)


@pytest.fixture(scope="module")
def chatlog():
    return simulate_chatlog(1500, embedding_dim=8, config=ChatLogConfig(seed=0, label_fraction=0.05))


def test_a_registered_variant_of_implicitrm_fits_exactly_as_implicitrm(chatlog, tmp_path):
    register(ImplicitRM("implicitrm_v2", "the four-group model under another name"))
    try:
        for inference in ("enumerate", "amortized"):
            config = TrainConfig(inference=inference, fit_labels=True, **FAST)
            original = fit(chatlog, config)
            variant = fit(chatlog, replace(config, method="implicitrm_v2"))
            assert variant.history.validation_score == original.history.validation_score  # exactly
            model = variant.reward_model
            assert model.model.observes_channels and (model.guide is not None) == (inference == "amortized")
            torch.testing.assert_close(
                model.score(chatlog.embeddings),
                original.reward_model.score(chatlog.embeddings),
                atol=0,
                rtol=0,
            )
            groups = model.posterior_groups(
                chatlog.embeddings, chatlog.actions, chatlog.context, users=chatlog.users
            )
            assert groups.shape == (len(chatlog), 4)
            loaded = RewardModel.load(model.save(tmp_path / inference))
            assert loaded.method == "implicitrm_v2"
            torch.testing.assert_close(loaded.score(chatlog.embeddings), model.score(chatlog.embeddings))
    finally:
        ESTIMATORS.pop("implicitrm_v2")


def test_a_users_engagement_network_and_channel_reload_with_their_settings(chatlog, plugin, tmp_path):
    specs = list(chatlog.channels)
    dwell = next(k for k, c in enumerate(specs) if c.kind == "continuous")
    channels = list(specs)
    feature_dim = 0
    channels[dwell] = plugin.ScaledDwell(specs[dwell], feature_dim, unit=30.0)
    data = chatlog
    engagement = plugin.MonotoneEngagement(
        data.embedding_dim + data.context_dim, column=data.embedding_dim, hidden=5
    )
    dims = (data.embedding_dim, data.context_dim)
    model = ImplicitFeedbackModel(*dims, _config(), channels, data.num_users, propensity=engagement)
    result = fit(data, TrainConfig(**FAST), model=model)
    saved = result.reward_model.save(tmp_path / "model")
    meta = json.loads((saved / "reward_model.json").read_text())
    assert meta["propensity"] == {
        "class": "my_assumptions:MonotoneEngagement",
        "settings": {
            "in_dim": data.embedding_dim + data.context_dim,
            "column": data.embedding_dim,
            "hidden": 5,
        },
    }
    assert meta["channel_types"][dwell] == "my_assumptions:ScaledDwell"
    assert meta["channel_settings"][dwell] == {"unit": 30.0}
    loaded = RewardModel.load(saved)
    assert (
        type(loaded.model.propensity).__name__ == "MonotoneEngagement" and loaded.model.propensity.hidden == 5
    )
    assert loaded.model.channels[dwell].unit == 30.0
    expected = result.reward_model.log_likelihood(
        data.embeddings, data.actions, data.context, users=data.users
    )
    got = loaded.log_likelihood(data.embeddings, data.actions, data.context, users=data.users)
    torch.testing.assert_close(got, expected)  # the engagement and dwell parts came back as they were
    # A fresh process that can import the module reloads it once told to trust it; never told, it
    # refuses the class and does not import the module (a run directory is data).
    np.save(tmp_path / "e.npy", data.embeddings[:20].numpy())
    for trust, expected_code in (("()", 1), ("('my_assumptions',)", 0)):
        code = (f"import sys, json; sys.path.insert(0, {str(tmp_path)!r}); import numpy as np; "
                "from pyro_irm.models import RewardModel; "
                f"m = RewardModel.load({str(saved)!r}, trust={trust}); "
                f"print(json.dumps(m.score(np.load({str(tmp_path / 'e.npy')!r})).tolist()))")  # fmt: skip
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert out.returncode == expected_code, out.stderr
        if expected_code:
            assert (
                "my_assumptions:" in out.stderr
                and "which nobody trusted, so it was not imported" in out.stderr
            )
    np.testing.assert_allclose(
        json.loads(out.stdout), result.reward_model.score(data.embeddings[:20]), atol=1e-6
    )


def _config():
    from pyro_irm.models import ModelConfig

    return ModelConfig(propensity_features="both")  # g reads the embedding and the context


def test_same_named_classes_of_two_packages_never_collide():
    from pyro_irm.models.channel import SignedBinaryChannel

    first = type("Rating", (SignedBinaryChannel,), {"__module__": "package_one.channels"})
    second = type("Rating", (SignedBinaryChannel,), {"__module__": "package_two.channels"})
    try:
        register_channel(first)
        register_channel(second)
        assert CHANNEL_TYPES["package_one.channels:Rating"] is first
        assert CHANNEL_TYPES["package_two.channels:Rating"] is second
        assert "Rating" not in CHANNEL_TYPES  # bare names only for the built-in channels of older saves
    finally:
        CHANNEL_TYPES.pop("package_one.channels:Rating")
        CHANNEL_TYPES.pop("package_two.channels:Rating")


class Unsaveable(torch.nn.Module):
    """An engagement network whose ``width`` is not kept: a reload could not rebuild it."""

    def __init__(self, in_dim, width):
        super().__init__()
        self.in_dim = in_dim
        self.net = torch.nn.Linear(in_dim, 2)

    def forward(self, features):
        return self.net(features)


def test_a_users_model_is_refused_before_the_fit_where_it_cannot_work(chatlog, plugin):
    data = chatlog
    in_dim = data.embedding_dim + data.context_dim

    def model(propensity=None):
        dims = (data.embedding_dim, data.context_dim)
        return ImplicitFeedbackModel(*dims, _config(), data.channels, data.num_users, propensity=propensity)

    with pytest.raises(ValueError, match="its argument 'width' is not kept as an attribute"):
        fit(data, TrainConfig(**FAST), model=model(Unsaveable(in_dim, 3)))

    class Local(plugin.MonotoneEngagement):
        pass

    with pytest.raises(ValueError, match="a class defined inside a function cannot be found again"):
        fit(data, TrainConfig(**FAST), model=model(Local(in_dim)))
    with pytest.raises(ValueError, match="restarts=3: restarts draw new initializations"):
        fit(data, TrainConfig(restarts=3, **FAST), model=model())
    with pytest.raises(ValueError, match="which method 'naive' does not fit"):
        fit(data, TrainConfig(method="naive", **FAST), model=model())


def test_a_plugins_estimator_fits_scores_and_reports_from_the_command_line(plugin, tmp_path, capsys):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(240):
        length = int(rng.integers(1, 40))
        good = rng.random() < 0.5
        acted = rng.random() < (0.6 if good else 0.15) * (0.3 + length / 40)
        rows.append(
            {
                "prompt": f"p{i // 2}",
                "response": f"r{i}",
                "copied": int(acted),
                "length": length,
                "noise": float(rng.normal()),
            }
        )
    log = write_records(tmp_path / "log.jsonl", rows)
    np.save(tmp_path / "log.npy", rng.normal(size=(240, 6)).astype(np.float32))
    run = tmp_path / "run"
    common = ["--embeddings", str(tmp_path / "log.npy"), "--quiet"]
    fit_command = ["--plugin", "my_assumptions", "fit", str(log), "--method", "implicitrm_monotone",
                   "--action-col", "copied", "--context-col", "noise", "--context-col", "length",
                   "--propensity-features", "both",
                   "--out", str(run), "--max-epochs", "3", *common]  # fmt: skip
    assert main(fit_command) == 0, capsys.readouterr().err
    meta = json.loads((run / "model" / "reward_model.json").read_text())
    assert (
        meta["method"] == "implicitrm_monotone"
        and meta["propensity"]["class"] == "my_assumptions:MonotoneEngagement"
        and meta["propensity"]["settings"]["column"] == 6 + 1  # 'length' found by its name, after 'noise'
    )
    assert main(["score", str(run), str(log), "--out", str(tmp_path / "s.jsonl"), *common]) == 0
    assert main(["score", str(run), str(log), "--groups", "--out", str(tmp_path / "g.jsonl"), *common]) == 0
    groups = [json.loads(line) for line in (tmp_path / "g.jsonl").read_text().splitlines()]
    from pyro_irm.groups import GROUP_NAMES

    assert len(groups) == 240 and abs(sum(groups[0][name] for name in GROUP_NAMES) - 1) < 1e-4
    assert main(["report", str(run), "--log", str(log), "--out", str(tmp_path / "report"), *common]) == 0
    capsys.readouterr()
    assert (
        main(["fit", str(log), "--method", "implicitrm_monotone", "--out", str(tmp_path / "x"), *common]) != 0
    )
