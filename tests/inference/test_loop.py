"""The training loop fit and finetune share: early stopping, the best epoch's state, resuming."""

from pyro_irm.inference.config import TrainConfig
from pyro_irm.inference.loop import LoopState, StopTraining, run_epochs


class _Scripted:
    """A trainer whose held-out scores are given in advance."""

    def __init__(self, scores):
        self.scores, self.epoch, self.trained = list(scores), -1, []

    def train_epoch(self, epoch):
        self.epoch = epoch
        self.trained.append(epoch)
        return 10.0 - epoch

    def validation_score(self):
        return None if not self.scores else self.scores[self.epoch]

    def snapshot(self):
        return {"epoch": self.epoch}


def test_the_loop_keeps_the_best_epoch_and_stops_after_patience():
    config = TrainConfig(max_epochs=20, patience=3, min_delta=0.01, progress=False)
    scores = [1.0, 2.0, 2.005, 1.5, 3.0, 0.0, 0.0, 0.0, 9.0]
    state = run_epochs(trainer := _Scripted(scores), config, description="test")
    # epoch 2 gains less than min_delta and epoch 3 loses (two without gain); epoch 4 gains; 5, 6
    # and 7 lose, and the loop stops after epoch 7, never seeing epoch 8's 9.0.
    assert trainer.trained == [0, 1, 2, 3, 4, 5, 6, 7]
    assert state.best_state == {"epoch": 4} and state.history.best_epoch == 4
    assert state.history.stopped_early and state.best_value == 3.0
    assert state.history.validation_score == scores[:8]
    assert state.history.train_loss == [10.0 - e for e in range(8)]
    small_gains = _Scripted([1.0, 2.0, 2.005, 2.009, 5.0])
    config = TrainConfig(max_epochs=5, patience=2, min_delta=0.01, progress=False)
    state = run_epochs(small_gains, config, description="test")
    assert small_gains.trained == [0, 1, 2, 3] and state.history.best_epoch == 1  # gains under min_delta


def test_without_held_out_rows_the_last_epoch_is_kept_and_every_epoch_runs():
    state = run_epochs(_Scripted([]), TrainConfig(max_epochs=5, progress=False), description="test")
    assert state.best_state is None and state.history.best_epoch == 4 and not state.history.stopped_early


def test_a_resumed_loop_starts_after_the_saved_epoch_and_hooks_every_epoch():
    config = TrainConfig(max_epochs=6, patience=10, progress=False)
    seen = []
    three = TrainConfig(max_epochs=3, patience=10, progress=False)
    hook = lambda e, s: seen.append((e, s.next_epoch))  # noqa: E731
    first = run_epochs(_Scripted(range(6)), three, description="test", after_epoch=hook)
    assert seen == [(0, 1), (1, 2), (2, 3)] and first.next_epoch == 3
    trainer = _Scripted(range(6))
    resumed = run_epochs(trainer, config, LoopState(**vars(first)), description="test")
    assert trainer.trained == [3, 4, 5] and resumed.history.best_epoch == 5
    assert len(resumed.history.train_loss) == 6
    stopped = LoopState(**vars(resumed))
    stopped.history.stopped_early = True
    trainer = _Scripted(range(20))
    run_epochs(trainer, TrainConfig(max_epochs=20, progress=False), stopped, description="test")
    assert trainer.trained == []  # a fit that had stopped early does not go on


class _RunsAway(_Scripted):
    """Raises StopTraining in epoch ``at``."""

    def __init__(self, scores, at):
        super().__init__(scores)
        self.at = at

    def train_epoch(self, epoch):
        if epoch == self.at:
            raise StopTraining("the risk ran away", ValueError("no epoch to keep"))
        return super().train_epoch(epoch)


def test_a_trainer_that_stops_keeps_the_best_epoch_or_raises_without_one(caplog):
    import pytest

    config = TrainConfig(max_epochs=10, patience=10, progress=False)
    with caplog.at_level("WARNING", logger="pyro_irm"):
        state = run_epochs(_RunsAway([1.0, 3.0, 2.0, 9.0], at=3), config, description="test")
    assert state.best_state == {"epoch": 1} and state.history.stopped_early
    assert state.history.epochs == 3 and "the best held-out epoch, 2, is kept" in caplog.text
    with pytest.raises(ValueError, match="no epoch to keep"):
        run_epochs(_RunsAway([], at=2), config, description="test")  # no held-out rows: nothing kept
