"""Muon (optim.optimizer='muon'): the update against torch.optim.Muon and a dense hand computation, which
parameters it takes, resume exactness, the ensemble's refusal, the config's errors."""

import math

import pytest
import torch
from faults_util import interrupted_at_update

from grokscope.config import ConfigError, ExperimentConfig, ModelConfig, OptimConfig, apply_overrides
from grokscope.models import build_model
from grokscope.store import load_run
from grokscope.store.files import load_tensors
from grokscope.store.run import STATE
from grokscope.sweep.jobs import ENSEMBLE, TRAIN, plan_jobs
from grokscope.sweep.spec import expand, make_spec
from grokscope.training import resume, train
from grokscope.training.adamw import AdamW
from grokscope.training.ensemble import check_ensemble_configs
from grokscope.training.muon import MuonAdamW, as_matrix, from_matrix, muon_update, newton_schulz, split_for_muon
from grokscope.training.optim import make_optimizer

pytestmark = pytest.mark.usefixtures("one_thread")
needs_torch_muon = pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="torch.optim.Muon not in this torch")


def _torch_muon_steps(w0, grads, adjust, lr=0.02, wd=0.1, momentum=0.95):
    p = torch.nn.Parameter(w0.clone())
    opt = torch.optim.Muon([p], lr=lr, weight_decay=wd, momentum=momentum, adjust_lr_fn=adjust)
    for g in grads:
        p.grad = g.clone()
        opt.step()
    return p.detach()


def _our_muon_steps(w0, grads, adjust, lr=0.02, wd=0.1, momentum=0.95):
    w, buf = w0.clone(), torch.zeros_like(w0)
    for g in grads:
        muon_update([w], [g.clone()], [buf], ["w"], lr=lr, weight_decay=wd, momentum=momentum, adjust=adjust)
    return w


@needs_torch_muon
@pytest.mark.parametrize("shape", [(7, 4), (4, 7), (5, 5)])
def test_the_update_is_torch_muons_bit_for_bit(shape):
    gen = torch.Generator().manual_seed(1)
    w0 = torch.randn(shape, generator=gen)
    grads = [torch.randn(shape, generator=gen) for _ in range(3)]
    ours = _our_muon_steps(w0, grads, "match_rms_adamw")
    theirs = _torch_muon_steps(w0, grads, "match_rms_adamw")
    assert torch.equal(ours, theirs)
    assert not torch.equal(ours, w0)


@needs_torch_muon
def test_the_original_scale_reads_our_matrices_as_in_by_out():
    """torch's Muon reads a parameter as [out, in] (nn.Linear), ours as [in, out] (x @ W): the same update on W^T."""
    gen = torch.Generator().manual_seed(2)
    w0 = torch.randn(3, 8, generator=gen)  # [in 3, out 8]: scale sqrt(8 / 3)
    grads = [torch.randn(3, 8, generator=gen) for _ in range(2)]
    ours = _our_muon_steps(w0, grads, "original")
    theirs = _torch_muon_steps(w0.T.contiguous(), [g.T.contiguous() for g in grads], "original").T
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def _newton_schulz_dense(g):
    """The quintic Newton-Schulz iteration in float64 (no bfloat16), written out."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.double()
    tall = x.shape[0] > x.shape[1]
    x = x.T if tall else x
    x = x / x.norm()
    for _ in range(5):
        m = x @ x.T
        x = a * x + (b * m + c * m @ m) @ x
    return x.T if tall else x


def test_one_step_of_muon_adamw_on_a_known_mlp_matches_a_dense_hand_step():
    cfg = ModelConfig(arch="mlp", d_model=6, d_mlp=10, init_seed=3)
    model = build_model(cfg, d_vocab=8, d_vocab_out=7, n_ctx=3)
    lr, wd, mu = 0.05, 0.5, 0.9
    opt = make_optimizer(model, OptimConfig(lr=lr, weight_decay=wd, optimizer="muon", muon_momentum=mu))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    a, b = torch.cartesian_prod(torch.arange(7), torch.arange(7)).T  # every pair: full-rank gradients (a rank-
    tokens = torch.stack([a, b, torch.full_like(a, 7)], dim=1)  # deficient one leaves NS amplifying bf16 noise)
    loss = torch.nn.functional.cross_entropy(model(tokens), (a + b) % 7)
    opt.zero_grad()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    opt.step()
    after = dict(model.named_parameters())
    for name in ("mlp.W_in", "mlp.W_out"):
        g = grads[name]
        nesterov = (1 - mu) * g + mu * ((1 - mu) * g)  # the first step's buffer is (1 - mu) g
        d_in, d_out = g.shape
        ortho = newton_schulz(nesterov)  # checked against the float64 iteration below
        want = before[name] * (1 - lr * wd) - lr * 0.2 * math.sqrt(max(d_in, d_out)) * ortho.float()
        torch.testing.assert_close(after[name], want, rtol=0, atol=1e-6)
    for name in ("embed.W_E", "unembed.W_U"):  # AdamW's first step: m_hat = g, v_hat = g^2
        g = grads[name].double()
        want = before[name].double() * (1 - lr * wd) - lr * g / (g.abs() + 1e-8)
        torch.testing.assert_close(after[name].double(), want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape", [(6, 10), (10, 6), (8, 8)])
def test_newton_schulz_follows_the_float64_iteration_on_a_well_conditioned_matrix(shape):
    """bfloat16 against float64: close where the spectrum is well away from 0 (small singular values are
    multiplied by ~3.4 per step, so on a rank-deficient matrix the bfloat16 rounding grows)."""
    gen = torch.Generator().manual_seed(6)
    g = torch.randn(shape, generator=gen)
    dense = _newton_schulz_dense(g)
    assert (newton_schulz(g).double() - dense).norm() < 0.05 * dense.norm()  # measured 0.017-0.032
    assert (g.double() / g.norm() - dense).norm() > 0.5 * dense.norm()  # the iteration does move it
    assert newton_schulz(g).dtype == torch.bfloat16


def test_newton_schulz_output_is_nearly_orthogonal():
    gen = torch.Generator().manual_seed(4)
    g = torch.randn(6, 16, generator=gen) * 3.0
    w, buf = torch.zeros(6, 16), torch.zeros(6, 16)
    muon_update([w], [g], [buf], ["w"], lr=1.0, weight_decay=0.0, momentum=0.0, adjust="none")
    singular = torch.linalg.svdvals(-w.double())
    assert singular.min() > 0.5 and singular.max() < 1.3  # U S' V^T with S' near 1, not the raw spectrum
    assert torch.linalg.svdvals(g.double()).max() > 5


def test_parameters_split_into_hidden_matrices_and_the_rest():
    tf = build_model(ModelConfig(d_model=16, n_heads=2, d_head=8, d_mlp=32), d_vocab=8, d_vocab_out=7, n_ctx=3)
    muon, adamw = split_for_muon(tf)
    assert sorted(n for n, _ in muon) == sorted(
        f"blocks.0.{x}" for x in ("attn.W_Q", "attn.W_K", "attn.W_V", "attn.W_O", "mlp.W_in", "mlp.W_out")
    )
    assert {n for n, _ in adamw} == {"embed.W_E", "pos_embed.W_pos", "unembed.W_U", "blocks.0.mlp.b_in",
                                     "blocks.0.mlp.b_out"}
    mlp = build_model(ModelConfig(arch="mlp", d_model=8, d_mlp=12), d_vocab=8, d_vocab_out=7, n_ctx=3)
    muon, adamw = split_for_muon(mlp)
    assert [n for n, _ in muon] == ["mlp.W_in", "mlp.W_out"] and [n for n, _ in adamw] == ["embed.W_E", "unembed.W_U"]
    user = torch.nn.Sequential(torch.nn.Embedding(5, 4), torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 5))
    muon, adamw = split_for_muon(user)  # a user's module: nn.Embedding tables and vectors to AdamW
    assert [n for n, _ in muon] == ["1.weight", "3.weight"]
    assert [n for n, _ in adamw] == ["0.weight", "1.bias", "3.bias"]
    opt = make_optimizer(mlp, OptimConfig(optimizer="muon", muon_lr_scale=3.0))
    assert isinstance(opt, MuonAdamW) and opt.param_groups[1]["lr_scale"] == 3.0
    assert type(make_optimizer(mlp, OptimConfig())) is AdamW  # the default is the plain AdamW of every run


def test_attention_weights_are_seen_as_their_projection_matrix():
    gen = torch.Generator().manual_seed(5)
    w_q = torch.randn(3, 5, 4, generator=gen)  # [heads, d_model, d_head]
    x = torch.randn(2, 5, generator=gen)
    per_head = torch.einsum("bd,hde->bhe", x, w_q).reshape(2, 12)
    torch.testing.assert_close(x @ as_matrix("attn.W_Q", w_q), per_head)
    assert torch.equal(from_matrix("attn.W_Q", as_matrix("attn.W_Q", w_q), w_q), w_q)
    w_o = torch.randn(3, 4, 5, generator=gen)  # [heads, d_head, d_model]
    z = torch.randn(2, 3, 4, generator=gen)
    torch.testing.assert_close(z.reshape(2, 12) @ as_matrix("attn.W_O", w_o), torch.einsum("bhe,hed->bd", z, w_o))
    assert torch.equal(from_matrix("attn.W_O", as_matrix("attn.W_O", w_o), w_o), w_o)


def test_a_model_without_hidden_matrices_is_refused_naming_the_field():
    class Bare(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Parameter(torch.zeros(4, 3))
            self.bias = torch.nn.Parameter(torch.zeros(3))

    with pytest.raises(ValueError, match="optim.optimizer"):
        make_optimizer(Bare(), OptimConfig(optimizer="muon"))


@pytest.mark.parametrize("extra", [{}, {"optim.grad_filter": "ema", "optim.warmup_steps": 5}])
def test_an_interrupted_muon_run_resumes_exactly(tmp_path, tiny_config, extra):
    cfg = apply_overrides(tiny_config, {"optim.optimizer": "muon", "train.epochs": 40, "train.checkpoint_every": 10,
                                        **extra})
    straight = train(cfg, tmp_path / "straight", progress=False)
    with interrupted_at_update(24):
        train(cfg, tmp_path / "crashed", progress=False)
    tensors, _ = load_tensors(tmp_path / "crashed" / STATE)
    assert "optim.blocks.0.mlp.W_in.momentum_buffer" in tensors and "optim.embed.W_E.exp_avg" in tensors
    assert not any(k.startswith("optim.blocks.0.mlp.W_in.exp_avg") for k in tensors)
    assert load_run(tmp_path / "crashed").metrics.index[-1] == 20
    resumed = resume(tmp_path / "crashed", progress=False)
    assert resumed.metrics.equals(straight.metrics)
    for step in straight.checkpoints:
        a, b = straight.load_state_dict(step), resumed.load_state_dict(step)
        assert all(torch.equal(a[k], b[k]) for k in a), step
    adamw = train(apply_overrides(cfg, {"optim.optimizer": "adamw"}), tmp_path / "adamw", progress=False)
    assert not adamw.metrics["train_loss"].equals(straight.metrics["train_loss"])  # Muon changed the run


def test_the_batched_ensemble_refuses_muon_and_a_sweep_trains_its_cells_one_by_one(tiny_config):
    cfg = apply_overrides(tiny_config, {"optim.optimizer": "muon"})
    with pytest.raises(ValueError, match="optim.optimizer='muon' is not supported by the batched ensemble"):
        check_ensemble_configs([cfg, apply_overrides(cfg, {"model.init_seed": 1})])
    spec = make_spec(name="m", base=cfg, axes={"optim.lr": [1e-3, 1e-2]}, seeds=2)
    cells = expand(spec)
    jobs = plan_jobs(cells, {c.name: "new" for c in cells}, workers=1)
    assert [j.kind for j in jobs] == [TRAIN] * 4
    adamw = expand(make_spec(name="a", base=tiny_config, axes={"optim.lr": [1e-3, 1e-2]}, seeds=2))
    assert ENSEMBLE in [j.kind for j in plan_jobs(adamw, {c.name: "new" for c in adamw}, workers=1)]


@pytest.mark.parametrize(
    "field, value",
    [("optimizer", "sgd"), ("muon_momentum", 1.0), ("muon_lr_scale", 0.0), ("muon_adjust_lr", "spectral")],
)
def test_bad_muon_fields_name_the_field(field, value):
    with pytest.raises(ConfigError, match=f"optim.{field}"):
        OptimConfig(**{field: value})


def test_muon_fields_round_trip_through_json():
    cfg = apply_overrides(ExperimentConfig(), {"optim.optimizer": "muon", "optim.muon_momentum": 0.9,
                                               "optim.muon_lr_scale": 2.5, "optim.muon_adjust_lr": "original"})
    assert ExperimentConfig.from_json(cfg.to_json()) == cfg


def test_a_bad_optimizer_on_the_command_line_is_one_line_and_exit_code_2(tmp_path, capsys):
    from grokscope.cli import main

    assert main(["train", "--preset", "tiny", "--set", "optim.optimizer=sgd", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "optim.optimizer" in err and len(err.splitlines()) == 1


def _muon_adamw_step(device):
    """(parameters before, after) of one MuonAdamW step of a small transformer on ``device`` (every pair of p = 7)."""
    cfg = ModelConfig(arch="transformer", d_model=8, n_heads=2, d_head=4, d_mlp=16, init_seed=5)
    model = build_model(cfg, d_vocab=8, d_vocab_out=7, n_ctx=3).to(device)
    opt = make_optimizer(model, OptimConfig(lr=0.05, weight_decay=0.5, optimizer="muon", muon_momentum=0.9))
    a, b = torch.cartesian_prod(torch.arange(7), torch.arange(7)).T
    tokens = torch.stack([a, b, torch.full_like(a, 7)], dim=1).to(device)
    before = {n: p.detach().cpu().clone() for n, p in model.named_parameters()}
    for _ in range(2):  # the second step reads the momentum buffers the first one made
        loss = torch.nn.functional.cross_entropy(model(tokens), ((a + b) % 7).to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
    buffers = [s["momentum_buffer"] for s in opt.state.values() if "momentum_buffer" in s]
    assert buffers and all(buf.device == next(model.parameters()).device for buf in buffers)
    return before, {n: p.detach().cpu() for n, p in model.named_parameters()}


def test_the_muon_step_creates_no_tensor_without_the_parameters_device(monkeypatch):
    """Under the strict-torch proxy of tests/device_proxy.py (a factory call without device= raises) the same bits."""
    from device_proxy import strict

    from grokscope.training import adamw, muon

    _, plain = _muon_adamw_step("cpu")
    strict(monkeypatch, [adamw, muon])
    _, again = _muon_adamw_step("cpu")
    assert all(torch.equal(again[n], plain[n]) for n in plain)


def test_a_muon_step_on_a_device_equals_the_cpu_step(device):
    before, cpu = _muon_adamw_step("cpu")
    _, here = _muon_adamw_step(device)
    cfg = ModelConfig(arch="transformer", d_model=8, n_heads=2, d_head=4, d_mlp=16)
    hidden = {n for n, _ in split_for_muon(build_model(cfg, d_vocab=8, d_vocab_out=7, n_ctx=3))[0]}
    assert {"blocks.0.mlp.W_in", "blocks.0.attn.W_Q"} <= hidden
    for name in cpu:
        step_cpu, step_here = cpu[name] - before[name], here[name] - before[name]
        assert step_cpu.norm() > 0, name
        # Newton-Schulz runs in bfloat16, whose rounding may differ between devices' kernels: the steps agree to a few
        # per cent on Muon's matrices (as the bfloat16 iteration agrees with float64), to float32 rounding elsewhere
        tol = 0.05 if name in hidden else 1e-3
        assert (step_here - step_cpu).norm() <= tol * step_cpu.norm(), name
