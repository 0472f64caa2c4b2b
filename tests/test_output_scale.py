"""model.output_scale: exact on every forward path, and scale 1 leaves every forward bitwise unchanged."""

import dataclasses

import torch

from grokscope.config import ExperimentConfig, ModelConfig, TaskConfig
from grokscope.models import build_model
from grokscope.models.fast import fast_forward
from grokscope.tasks import make_task
from grokscope.training.ensemble import Ensemble

P = 13


def _setup(arch="transformer", scale=1.0):
    task = make_task(TaskConfig(p=P))
    cfg = ModelConfig(arch=arch, d_model=16, n_heads=2, d_head=8, d_mlp=32, output_scale=scale)
    return task, build_model(cfg, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=task.n_ctx)


def test_scale_multiplies_logits_on_every_module_forward():
    for arch in ("transformer", "mlp"):
        task, base = _setup(arch)
        _, scaled = _setup(arch, 3.5)
        x = task.tokens
        assert torch.equal(scaled(x), base(x) * 3.5)
        assert torch.equal(scaled.forward_all(x), base.forward_all(x) * 3.5)


def test_fast_path_and_ensemble_match_the_module():
    task, model = _setup("transformer", 0.25)
    fast = fast_forward(model, task)
    assert fast is not None
    ref = model(task.tokens)
    torch.testing.assert_close(fast(task.tokens), ref, rtol=1e-5, atol=1e-6)
    _, unscaled = _setup("transformer")
    torch.testing.assert_close(fast(task.tokens), fast_forward(unscaled, task)(task.tokens) * 0.25)
    cfg = ExperimentConfig(task=TaskConfig(p=P), model=model.cfg)
    ens = Ensemble([cfg, dataclasses.replace(cfg, name="b")])
    torch.testing.assert_close(ens.all_logits()[0], ref, rtol=1e-5, atol=1e-6)


def test_scale_one_is_bitwise_the_plain_computation():
    task, model = _setup("transformer")
    x = task.tokens
    resid = model._embed(x)
    resid = model._block(0, model.blocks[0], resid, last_only=True)
    plain = resid[:, -1] @ model.unembed.W_U + model.unembed.b_U
    assert torch.equal(model(x), plain)
    task, mlp = _setup("mlp")
    h = torch.relu(mlp.embed.W_E[x[:, :2]].sum(1) @ mlp.mlp.W_in)
    assert torch.equal(mlp(x), h @ mlp.mlp.W_out @ mlp.W_U)


def test_lazy_rich_presets_and_sweep(tmp_path):
    from grokscope.presets import PRESETS
    from grokscope.sweep.presets import SWEEP_PRESETS
    from grokscope.training.loop import train

    rich, lazy = PRESETS["lazy-rich-rich"](), PRESETS["lazy-rich-lazy"]()
    assert (rich.model.output_scale, lazy.model.output_scale) == (0.1, 16.0)
    assert rich.optim.weight_decay == lazy.optim.weight_decay == 0.0
    assert rich.optim.lr == 1e-3 / 0.1 and lazy.optim.lr == 1e-3 / 16
    spec = SWEEP_PRESETS["lazy-rich"]()
    assert spec.name == "lazy-rich"
    tiny = dataclasses.replace(
        lazy, task=TaskConfig(p=P, train_fraction=0.5),
        train=dataclasses.replace(lazy.train, epochs=20, log_every=10, measure_every=10, checkpoint_every=20))
    assert train(tiny, tmp_path / "run", progress=False).metrics["train_acc"].notna().any()
