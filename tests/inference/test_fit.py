from dataclasses import replace

import numpy as np
import pytest
import torch

from pyro_irm import (
    FeedbackData,
    IdentifiabilityWarning,
    RewardModel,
    SimulationConfig,
    TrainConfig,
    fit,
    simulate,
)

FAST = dict(max_epochs=3, batch_size=128, progress=False)


def test_same_seed_same_numbers(small_data):
    first = fit(small_data, TrainConfig(seed=5, **FAST))
    second = fit(small_data, TrainConfig(seed=5, **FAST))
    other = fit(small_data, TrainConfig(seed=6, **FAST))
    scores = [r.reward_model.score(small_data.embeddings) for r in (first, second, other)]
    assert torch.equal(scores[0], scores[1])
    assert first.history.train_loss == second.history.train_loss
    assert not torch.equal(scores[0], scores[2])


@pytest.mark.parametrize("inference", ["enumerate", "amortized", "fused"])
def test_save_load_round_trips_exactly(small_data, tmp_path, inference):
    result = fit(small_data, TrainConfig(inference=inference, **FAST))
    model = result.reward_model
    loaded = RewardModel.load(model.save(tmp_path / "model"))
    e, y, c = small_data.embeddings, small_data.actions, small_data.context
    assert torch.equal(model.score(e, c), loaded.score(e, c))
    assert torch.equal(model.posterior_groups(e, y, c), loaded.posterior_groups(e, y, c))
    if inference == "amortized":
        assert torch.equal(
            model.posterior_groups(e, y, c, source="guide"),
            loaded.posterior_groups(e, y, c, source="guide"),
        )
    assert loaded.config == model.config and loaded.method == "implicitrm"


def test_load_reports_a_missing_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="reward_model.json"):
        RewardModel.load(tmp_path)


def test_checkpoint_resume_matches_an_uninterrupted_fit(small_data, tmp_path):
    config = TrainConfig(seed=2, validation_fraction=0.2, patience=50, **{**FAST, "max_epochs": 4})
    whole = fit(small_data, config)
    directory = str(tmp_path / "ckpt")
    fit(small_data, TrainConfig(**{**config.__dict__, "max_epochs": 2, "checkpoint_dir": directory}))
    resumed = fit(small_data, TrainConfig(**{**config.__dict__, "checkpoint_dir": directory}))
    assert resumed.history.epochs == 4
    assert resumed.history.train_loss == pytest.approx(whole.history.train_loss, abs=1e-6)
    assert torch.allclose(
        whole.reward_model.score(small_data.embeddings),
        resumed.reward_model.score(small_data.embeddings),
        atol=1e-5,
    )


def test_checkpoint_of_another_fit_is_refused(small_data, tmp_path):
    directory = str(tmp_path / "ckpt")
    fit(small_data, TrainConfig(checkpoint_dir=directory, **FAST))
    with pytest.raises(ValueError, match="checkpoint is from a different fit .*method"):
        fit(small_data, TrainConfig(method="naive", checkpoint_dir=directory, **FAST))


def test_early_stopping_keeps_the_best_epoch(small_data):
    result = fit(small_data, TrainConfig(max_epochs=200, patience=2, batch_size=64, progress=False))
    history = result.history
    assert history.stopped_early and history.epochs < 200
    assert history.validation_score[history.best_epoch] == max(history.validation_score)
    assert history.epochs == history.best_epoch + 3


def test_score_function_guide_trains_model_guide_and_baseline(small_data):
    config = TrainConfig(inference="amortized", guide_gradient="score_function", **FAST)
    result = fit(small_data, config)
    assert all(torch.isfinite(torch.tensor(result.history.train_loss)))
    guide = result.reward_model.guide
    assert not guide.enumerate_groups
    # The same fit, stopped after its first epoch, starts from the same initialization (same seed):
    # every part of the guide, the baseline included, moved between epoch 1 and epoch 3.
    no_selection = dict(validation_fraction=0.0)
    early = fit(small_data, replace(config, max_epochs=1, **no_selection)).reward_model.guide
    late = fit(small_data, replace(config, max_epochs=3, **no_selection)).reward_model.guide
    moved = dict(early.named_parameters())
    assert any(name.startswith("baseline.") for name in moved)
    for name, value in late.named_parameters():
        assert not torch.equal(value, moved[name]), f"{name} did not train"


def test_oracle_needs_truth():
    data = FeedbackData(torch.randn(10, 3), torch.zeros(10))
    with pytest.raises(ValueError, match="oracle.*truth"):
        fit(data, TrainConfig(method="oracle", **FAST))


def test_unidentified_setting_warns():
    data = simulate(SimulationConfig(num_rows=300, embedding_dim=4, context_strength=0.0))
    assert data.context is None
    with pytest.warns(IdentifiabilityWarning, match="fixes only their product"):
        fit(data, TrainConfig(**FAST))


def test_cuda_request_without_cuda_is_a_clear_error(small_data):
    if torch.cuda.is_available():
        pytest.skip("CUDA is present")
    with pytest.raises(ValueError, match="CUDA is not available"):
        fit(small_data, TrainConfig(device="cuda", **FAST))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fit_on_cuda_matches_cpu_closely(small_data):
    cpu = fit(small_data, TrainConfig(device="cpu", **FAST)).reward_model.score(small_data.embeddings)
    gpu = fit(small_data, TrainConfig(device="cuda", **FAST)).reward_model.score(small_data.embeddings)
    assert torch.corrcoef(torch.stack([cpu, gpu]))[0, 1] > 0.99


def test_fit_selected_keeps_the_configuration_with_the_best_held_out_score(small_data):
    from pyro_irm import ModelConfig, fit_selected

    config = TrainConfig(inference="fused", max_epochs=4, progress=False)
    candidates = [ModelConfig(reward_hidden=(2,)), ModelConfig(reward_hidden=(64, 32))]
    scores = [fit(small_data, config, c).best_validation_score for c in candidates]
    result, chosen = fit_selected(small_data, config, candidates)
    assert scores[0] != scores[1]
    assert chosen == candidates[int(np.argmax(scores))]
    assert result.best_validation_score == max(scores)


def test_the_held_out_elbo_is_the_same_in_chunks_as_in_one_pass():
    """Validation scans its rows in chunks (65,536 by default); the sum cannot depend on the cut."""
    from pyro_irm.inference.objectives import heldout_elbo
    from pyro_irm.models.base import Rows
    from pyro_irm.models.guides import StratificationGuide

    data = simulate(SimulationConfig(num_rows=300, embedding_dim=6, seed=4))
    result = fit(data, TrainConfig(inference="amortized", max_epochs=2, progress=False))
    model, guide = result.reward_model.model, StratificationGuide(result.reward_model.model)
    index = torch.arange(250)
    for q in (None, guide):
        rows = Rows(data.embeddings, data.actions, data.context)
        whole = heldout_elbo(model, q, rows, index)
        chunked = heldout_elbo(model, q, rows, index, chunk_rows=17)
        assert chunked == pytest.approx(whole, rel=1e-6)


def test_memory_mapped_embeddings_fit_exactly_as_in_memory_ones(tmp_path):
    """Minibatches of memory-mapped embeddings are read from the file, not through the mapping (a
    bounded resident set; BENCHMARKS.md); the fit is the in-memory fit, number for number."""
    from pyro_irm.data.paging import row_file

    data = simulate(SimulationConfig(num_rows=1500, embedding_dim=6, seed=3))
    np.save(tmp_path / "embeddings.npy", data.embeddings.numpy())
    mapped = np.load(tmp_path / "embeddings.npy", mmap_mode="c")
    rest = {"actions": data.actions[100:], "context": data.context[100:]}
    on_file = FeedbackData(mapped[100:], **rest)  # a slice: its rows start further into the file
    in_memory = FeedbackData(data.embeddings[100:].clone(), **rest)
    assert row_file(on_file.embeddings) is not None and row_file(in_memory.embeddings) is None
    config = TrainConfig(inference="enumerate", max_epochs=3, batch_size=128, progress=False)
    first, second = fit(on_file, config), fit(in_memory, config)
    assert first.history.validation_score == second.history.validation_score
    torch.testing.assert_close(
        first.reward_model.score(in_memory.embeddings), second.reward_model.score(in_memory.embeddings)
    )


@pytest.mark.parametrize("inference", ["fused", "enumerate", "amortized"])
def test_bfloat16_autocast_fits_what_float32_fits(small_data, inference):
    """The networks run in bfloat16 (on CPU here) while the likelihood's log-space sums stay float32:
    the fit lands where the float32 fit does."""
    config = TrainConfig(inference=inference, max_epochs=6, batch_size=128, progress=False)
    full = fit(small_data, config)
    low = fit(small_data, replace(config, precision="bfloat16"))
    assert low.best_validation_score == pytest.approx(full.best_validation_score, abs=0.02)
    rewards = torch.stack([r.reward_model.score(small_data.embeddings) for r in (full, low)])
    assert torch.corrcoef(rewards)[0, 1] > 0.98


def test_float16_needs_a_gpu(small_data):
    if torch.cuda.is_available():
        pytest.skip("CUDA is present")
    with pytest.raises(ValueError, match="float16' needs one CUDA device"):
        fit(small_data, TrainConfig(precision="float16", **FAST))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["float32", "bfloat16", "float16"])
def test_fit_on_cuda_moves_the_data_once_and_matches_cpu(small_data, precision):
    from pyro_irm.data.feedback import FeedbackData

    moved = small_data.to("cuda")
    assert isinstance(moved, FeedbackData) and moved.embeddings.is_cuda and moved.actions.is_cuda
    cpu = fit(small_data, TrainConfig(device="cpu", **FAST)).reward_model.score(small_data.embeddings)
    result = fit(small_data, TrainConfig(device="cuda", precision=precision, **FAST))
    gpu = result.reward_model.score(small_data.embeddings)
    assert torch.corrcoef(torch.stack([cpu, gpu.cpu()]))[0, 1] > 0.98


def test_fit_selected_chooses_among_the_users_models_too(small_data):
    """A candidate may be a model of the user's: it is trained in place and the chosen one is that
    object, with the held-out score fit gives it."""
    from pyro_irm import ModelConfig, fit_selected
    from pyro_irm.models import ImplicitFeedbackModel

    config = TrainConfig(inference="fused", max_epochs=4, progress=False)

    def build(width):
        torch.manual_seed(0)
        return ImplicitFeedbackModel(8, small_data.context_dim, ModelConfig(reward_hidden=(width,)))

    scores = [fit(small_data, config, model=build(w)).best_validation_score for w in (2, 64)]
    candidates = [build(2), build(64)]
    result, chosen = fit_selected(small_data, config, candidates)
    assert scores[0] != scores[1]
    assert chosen is candidates[int(np.argmax(scores))] and result.reward_model.model is chosen
    assert result.best_validation_score == pytest.approx(max(scores), abs=1e-6)
