import numpy as np
import pytest
import torch

from pyro_irm import FeedbackData
from pyro_irm.data import split_indices


def _rows(n=5, d=3):
    return torch.randn(n, d), torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0])[:n]


def test_valid_data_keeps_float32_numpy_memory():
    embeddings = np.random.rand(5, 3).astype(np.float32)
    data = FeedbackData(embeddings, np.array([0, 1, 0, 1, 1]))
    embeddings[0, 0] = 42.0
    assert data.embeddings[0, 0].item() == 42.0  # shared, not copied
    assert data.actions.dtype == torch.float32 and len(data) == 5


def test_nan_embedding_names_field_row_and_column():
    embeddings, actions = _rows()
    embeddings[3, 2] = float("nan")
    with pytest.raises(ValueError, match=r"embeddings: row 3, column 2 is nan"):
        FeedbackData(embeddings, actions)


def test_infinite_context_names_row():
    embeddings, actions = _rows()
    context = torch.zeros(5, 2)
    context[4, 1] = float("inf")
    with pytest.raises(ValueError, match=r"context: row 4, column 1 is inf"):
        FeedbackData(embeddings, actions, context=context)


@pytest.mark.parametrize("bad", [2.0, -1.0, 0.5, float("inf")])
def test_action_outside_zero_one_names_first_bad_row(bad):
    embeddings, actions = _rows()
    actions[2] = bad
    actions[4] = 3.0
    with pytest.raises(ValueError, match=r"actions: row 2\b.*(must be 0 or 1|is inf)"):
        FeedbackData(embeddings, actions)


def test_a_missing_action_is_nan_and_not_an_action_for_single_action_methods():
    embeddings, actions = _rows()
    actions[2] = float("nan")  # an empty cell: left out of the row's likelihood by the model
    data = FeedbackData(embeddings, actions)
    assert torch.isnan(data.actions[2]) and data.action[2] == 0


def test_mismatched_lengths():
    embeddings, _ = _rows()
    with pytest.raises(ValueError, match=r"actions: 4 rows but embeddings has 5"):
        FeedbackData(embeddings, torch.zeros(4))
    with pytest.raises(ValueError, match=r"context: expected shape \(5, columns\)"):
        FeedbackData(embeddings, torch.zeros(5), context=torch.zeros(3, 1))


def test_empty_data():
    with pytest.raises(ValueError, match=r"embeddings: the data set is empty"):
        FeedbackData(torch.zeros(0, 4), torch.zeros(0))


def test_wrong_rank_and_type():
    with pytest.raises(ValueError, match=r"embeddings: expected shape \(rows, dim\)"):
        FeedbackData(torch.zeros(5), torch.zeros(5))
    with pytest.raises(ValueError, match=r"embeddings: expected a torch.Tensor or numpy array"):
        FeedbackData([[0.0]], torch.zeros(1))


def test_split_is_disjoint_complete_and_seeded():
    first, second = split_indices(100, 0.2, seed=1)
    assert len(second) == 20 and len(first) == 80
    assert sorted(torch.cat([first, second]).tolist()) == list(range(100))
    again = split_indices(100, 0.2, seed=1)
    assert torch.equal(first, again[0])
    assert not torch.equal(second, split_indices(100, 0.2, seed=2)[1])


def test_an_observational_log_names_the_row_whose_action_has_no_feedback():
    embeddings = torch.zeros(3, 2)
    data = FeedbackData(embeddings, torch.tensor([1.0, 0.0, 0.0]), observed=torch.tensor([1.0, 1.0, 0.0]))
    assert data.setting == "observational" and FeedbackData(embeddings, torch.zeros(3)).setting == "implicit"
    with pytest.raises(ValueError, match="actions: row 2 is 1 but observed is 0"):
        FeedbackData(embeddings, torch.tensor([0.0, 0.0, 1.0]), observed=torch.tensor([1.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match="observed: row 1 is 0.5"):
        FeedbackData(embeddings, torch.zeros(3), observed=torch.tensor([1.0, 0.5, 0.0]))


def test_propensity_and_prompt_ids_are_checked_and_subset():
    embeddings = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="propensity: row 1 is 0.0"):
        FeedbackData(embeddings, torch.zeros(3), propensity=torch.tensor([0.5, 0.0, 1.0]))
    with pytest.raises(ValueError, match="prompt_ids: expected integers"):
        FeedbackData(embeddings, torch.zeros(3), prompt_ids=torch.tensor([0.5, 1.0, 2.0]))
    data = FeedbackData(
        embeddings,
        torch.zeros(3),
        observed=torch.ones(3),
        propensity=torch.tensor([0.5, 0.25, 1.0]),
        prompt_ids=np.array([7, 7, 9]),
    )
    part = data.subset(torch.tensor([2, 0]))
    assert part.prompt_ids.tolist() == [9, 7] and part.propensity.tolist() == [1.0, 0.5]
    assert part.observed.tolist() == [1.0, 1.0]


def test_context_columns_are_found_by_name_among_the_engagement_features():
    from pyro_irm import LogSchema, ModelConfig, read_log
    from pyro_irm.models.implicit import propensity_feature_index

    rows = [
        {"prompt": "p", "response": f"r{i}", "copied": i % 2, "length": i, "position": -i} for i in range(6)
    ]
    log = read_log(rows, LogSchema(actions=("copied",), context=("position", "length")))
    data = log.to_feedback(np.zeros((6, 4), dtype=np.float32))
    assert data.context_names == ("position", "length") and data.context_index("length") == 1
    assert data.subset(torch.arange(3)).context_names == ("position", "length")
    assert propensity_feature_index(ModelConfig(propensity_features="both"), data, "length") == 5
    assert propensity_feature_index(ModelConfig(propensity_features="context"), data, "length") == 1
    with pytest.raises(
        ValueError, match=r"no column named 'dwell'; its columns are \['position', 'length'\]"
    ):
        data.context_index("dwell")
    with pytest.raises(ValueError, match="reads the embedding alone"):
        propensity_feature_index(ModelConfig(propensity_features="embedding"), data, "length")
    with pytest.raises(ValueError, match="must name each of the 2 context column"):
        FeedbackData(torch.zeros(6, 4), torch.zeros(6), context=torch.zeros(6, 2), context_names=("a", "a"))
