import os

import pytest
import torch

# Tests run on 2 shared cores; keep torch from oversubscribing them.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def tiny_config():
    from grokscope.presets import tiny

    return tiny()
