"""Every tensor the analysis modules create takes its device from the tensors it combines with (issue 20's device
note), so an analysis of a model on CUDA does not mix devices; on the CPU the numbers stay bit for bit.

There is no GPU in the test run, so the check is on the code: the modules' ``torch`` is replaced by a proxy whose
factory functions (``torch.arange``, ``zeros``, ``tensor``, ...) refuse a call without ``device=``
(tests/device_proxy.py, shared with tests/test_interp_device.py). A call without one makes a CPU tensor whatever the
inputs' device. The whole analyses then run under the proxy and must give exactly the results they give without it.
(grokscope.measures, which they call, is checked by its own tests.)
"""

import json

import pytest
import torch
from device_proxy import StrictTorch, strict

from grokscope.analysis import basis, irreps, logits, reverse, zoo
from grokscope.analysis.construct import group_network, quadratic_mlp_addition, s5_irrep_transformer
from grokscope.config import ModelConfig, TaskConfig
from grokscope.models import build_model
from grokscope.tasks import make_task
from grokscope.tasks.zoo import make_s5_task

MODULES = (reverse, logits, basis, zoo, irreps)


def test_the_proxy_refuses_a_factory_call_without_a_device():
    proxy = StrictTorch()
    with pytest.raises(AssertionError, match="torch.arange called without device="):
        proxy.arange(3)
    assert torch.equal(proxy.arange(3, device="cpu"), torch.arange(3)) and proxy.float64 is torch.float64


def _transformer(seed=3):
    cfg = ModelConfig(arch="transformer", d_model=16, n_heads=2, d_head=8, d_mlp=32, init_seed=seed)
    return build_model(cfg, d_vocab=14, d_vocab_out=13, n_ctx=3).eval()


def _cases():
    """(name, thunk) of whole analyses: the additive one of a transformer and an MLP, the discrete-log ones (even
    n = 12, Nyquist key included) of a constructed network and a random transformer, the zoo and S5 blocks, and the
    logit-level analysis of a model known only by its logits (additive grid and discrete-log basis)."""
    add = make_task(TaskConfig(p=13, train_fraction=0.3))
    mul = make_task(TaskConfig(formula="a*b", p=13, train_fraction=0.5))
    div = make_task(TaskConfig(formula="a/b", p=13, train_fraction=0.5))
    s5 = make_s5_task(TaskConfig(kind="s5", formula="x*y", train_fraction=0.5))
    net, _ = group_network("a*b", 13, [1, 5])
    return [
        ("additive transformer", lambda: reverse.analyze_checkpoint(_transformer(), add).to_dict()),
        ("additive mlp", lambda: reverse.analyze_checkpoint(quadratic_mlp_addition(13, [2, 5]), add).to_dict()),
        ("dlog network", lambda: basis.analyze_in_basis(net, mul, key_freqs=[1, 5, 6]).to_dict()),
        ("dlog transformer", lambda: basis.analyze_in_basis(_transformer(), div).to_dict()),
        ("attention fits", lambda: [h.to_dict() for h in reverse.attention_fits(_transformer(), add)]),
        ("zoo", lambda: zoo.zoo_analysis(_transformer(), mul)),
        ("s5", lambda: zoo.zoo_analysis(s5_irrep_transformer(["[4,1]", "[3,1^2]"]), s5)),
        ("logit level, additive", lambda: logits.analyze_logits(_transformer(), add)),
        ("logit level, dlog", lambda: logits.analyze_logits(net, mul)),
    ]


@pytest.mark.parametrize("index", range(9))
def test_the_analyses_create_no_tensor_without_the_inputs_device(monkeypatch, index):
    name, run = _cases()[index]
    plain = json.dumps(run(), sort_keys=True)
    strict(monkeypatch, MODULES)
    assert json.dumps(run(), sort_keys=True) == plain, name  # the same bits with every device explicit
