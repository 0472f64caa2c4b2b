
import pytest
import torch

# Tests use tiny models: one thread avoids oversubscription (threads spin-waiting on each other) on small CPUs.
torch.set_num_threads(1)


@pytest.fixture
def tiny_config():
    from grokscope.presets import tiny

    return tiny()
