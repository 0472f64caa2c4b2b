"""The zoo's models, losses, optimiser variants and presets (issue 7), at tiny size."""

import math

import pytest
import torch
from faults_util import interrupted_at_update
from torch import nn

from grokscope.analysis.zoo import operand_asymmetry, parity_neuron_bits, spectra_both_bases
from grokscope.config import SEQUENCE_KINDS, ExperimentConfig, ModelConfig, apply_overrides
from grokscope.models import VectorMLP, build_model, circle_embedding
from grokscope.models.fast import fast_forward
from grokscope.presets import get_preset
from grokscope.presets_zoo import ZOO_PRESETS
from grokscope.tasks import make_task
from grokscope.training import loop
from grokscope.training.losses import cross_entropy, softmax_collapse, stablemax_cross_entropy
from grokscope.training.optim import GradFilter, global_norm, l1_prox, perpendicular_grad, rescale_to_norm


def _params(*tensors):
    out = []
    for i, t in enumerate(tensors):
        p = nn.Parameter(t.clone())
        out.append((f"w{i}", p))
    return out


# --------------------------------------------------------------------------- losses


def test_stablemax_identity_and_loss():
    x = torch.randn(6, 9, dtype=torch.float64) * 5
    s = torch.where(x >= 0, x + 1, 1 / (1 - x))
    stablemax = s / s.sum(-1, keepdim=True)
    assert torch.allclose(stablemax, torch.softmax(torch.sign(x) * torch.log1p(x.abs()), -1))
    y = torch.randint(0, 9, (6,))
    want = -torch.log(stablemax[torch.arange(6), y]).mean()
    assert torch.allclose(stablemax_cross_entropy(x, y), want)
    assert torch.allclose(cross_entropy(x, y), torch.nn.functional.cross_entropy(x, y))


def test_softmax_collapse_thresholds_float32_vs_float64():
    C = 67

    def at_gap(g, dtype):
        z = torch.zeros(1, C, dtype=torch.float64)
        z[0, 0] = g
        return softmax_collapse(z, torch.tensor([0]), dtype)["sc"]

    assert at_gap(15.0, torch.float32) == 0.0 and at_gap(22.0, torch.float32) == 1.0  # ~20.1 nats in fp32
    assert at_gap(22.0, torch.float64) == 0.0 and at_gap(42.0, torch.float64) == 1.0  # ~40.2 in fp64
    assert softmax_collapse(torch.tensor([[200.0, 0.0]]), torch.tensor([0]), torch.float64)["zero_loss"] == 1.0


# --------------------------------------------------------------------------- optimiser pieces


@pytest.mark.parametrize("kind", ["ema", "ma"])
def test_grokfast_lambda_zero_is_a_no_op_and_constant_gradient_is_scaled(kind):
    g = torch.randn(4, 3)
    for amplification, factor in ((0.0, 1.0), (2.0, 3.0)):
        ((name, p),) = _params(torch.zeros(4, 3))
        filt = GradFilter(kind, alpha=0.9, amplification=amplification, window=3)
        for _ in range(5):
            p.grad = g.clone()
            filt.apply([(name, p)])
        assert torch.allclose(p.grad, factor * g, atol=1e-6)


def test_grokfast_ma_waits_for_a_full_window_and_state_round_trips():
    ((name, p),) = _params(torch.zeros(2))
    filt = GradFilter("ma", amplification=1.0, window=3)
    grads = [torch.tensor([1.0, 0.0]), torch.tensor([2.0, 0.0]), torch.tensor([3.0, 0.0]), torch.tensor([4.0, 0.0])]
    seen = []
    for g in grads:
        p.grad = g.clone()
        filt.apply([(name, p)])
        seen.append(float(p.grad[0]))
    assert seen == [1.0, 2.0, 3.0 + 2.0, 4.0 + 3.0]
    other = GradFilter("ma", amplification=1.0, window=3)
    other.load_state_tensors(filt.state_tensors())
    assert [t.tolist() for t in other.hist[name]] == [t.tolist() for t in filt.hist[name]]


def test_perpendicular_gradient_is_orthogonal_and_keeps_the_norm():
    torch.manual_seed(0)
    named = _params(torch.randn(5, 4, dtype=torch.float64), torch.randn(7, dtype=torch.float64))
    before = []
    for _, p in named:
        p.grad = torch.randn_like(p)
        before.append(p.grad.norm().item())
    perpendicular_grad(named)
    for (_, p), n in zip(named, before):
        assert abs(float((p.detach() * p.grad).sum())) < 1e-10
        assert math.isclose(p.grad.norm().item(), n, rel_tol=1e-12)


def test_l1_prox_soft_thresholds_and_fixed_norm_rescales():
    ((_, p),) = named = _params(torch.tensor([0.5, -0.05, 0.02, -2.0]))
    l1_prox(named, 0.1)
    assert p.detach().tolist() == pytest.approx([0.4, 0.0, 0.0, -1.9])
    named = _params(torch.randn(3, 3), torch.randn(4))
    rescale_to_norm(named, 2.5)
    assert global_norm(named) == pytest.approx(2.5)


# --------------------------------------------------------------------------- models


def test_attention_only_transformer_has_no_mlp_and_no_fast_path():
    task = make_task(apply_overrides(get_preset("tiny"), {}).task)
    cfg = ModelConfig(d_model=16, n_heads=2, d_head=8, n_layers=2, attn_only=True)
    model = build_model(cfg, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=3)
    assert not any("mlp" in k for k in model.state_dict())
    logits, cache = model.run_with_cache(task.tokens[:5])
    assert (
        logits.shape == (5, task.d_vocab_out)
        and "blocks.1.hook_resid_post" in cache
        and "blocks.0.mlp.hook_post" not in cache
    )
    assert torch.allclose(model(task.tokens[:5]), logits)
    assert fast_forward(model, task) is None


def test_dropout_only_acts_in_training_mode_and_init_scale_multiplies_every_parameter():
    base = ModelConfig(d_model=16, n_heads=2, d_head=8, d_mlp=32)
    task = make_task(get_preset("tiny").task)
    plain = build_model(base, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=3)
    drop = build_model(
        ModelConfig(**(base.__dict__ | {"dropout": 0.5})), d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=3
    )
    x = task.tokens[:20]
    drop.eval()
    assert torch.equal(drop(x), plain(x))
    drop.train()
    assert not torch.equal(drop(x), plain(x))
    assert fast_forward(drop, task) is None
    big = build_model(
        ModelConfig(**(base.__dict__ | {"init_scale": 3.0})),
        d_vocab=task.d_vocab,
        d_vocab_out=task.d_vocab_out,
        n_ctx=3,
    )
    for (n, a), (_, b) in zip(plain.named_parameters(), big.named_parameters()):
        assert torch.allclose(b, 3.0 * a), n


def test_circle_embedding_is_frozen_through_training(tmp_path):
    cfg = apply_overrides(
        get_preset("pair-fixed-circle"), {"task.p": 11, "train.epochs": 5, "train.checkpoint_every": 5}
    )
    run = loop.train(cfg, tmp_path / "run", progress=False)
    model = build_model(cfg.model, d_vocab=12, d_vocab_out=11, n_ctx=3)
    assert not model.embed.W_E.requires_grad
    w = circle_embedding(12, 11).to(model.embed.W_E.dtype)
    assert torch.allclose(model.embed.W_E, w)
    assert torch.allclose(w[:11].norm(dim=0), torch.ones(2, dtype=w.dtype))
    trained = run.load_state_dict(5)
    assert torch.equal(trained["embed.W_E"], model.embed.W_E.detach())
    assert not torch.equal(trained["mlp.W_in"], model.mlp.W_in.detach())  # the rest did train


def test_vector_mlp_reads_bits_as_numbers():
    cfg = ModelConfig(arch="vector_mlp", d_mlp=8)
    model = VectorMLP(cfg, d_vocab=2, d_vocab_out=2, n_ctx=5)
    x = torch.tensor([[1, 0, 1, 1, 1]])
    want = torch.relu(x.float() @ model.mlp.W_in) @ model.mlp.W_out
    assert torch.allclose(model(x), want)


# --------------------------------------------------------------------------- presets train at tiny size


def shrink(cfg: ExperimentConfig, epochs: int = 3) -> ExperimentConfig:
    o = {"train.epochs": epochs, "train.log_every": 1, "train.measure_every": 2, "train.checkpoint_every": 2}
    kind, m = cfg.task.kind, cfg.model
    if kind in ("modular", "multi"):
        o["task.p"] = 11
    if kind == "sparse_parity":
        o.update({"task.n_bits": 8, "task.n_examples": 120, "task.n_train": 80})
    if kind in SEQUENCE_KINDS:
        o.update(
            {
                "task.n_digits": 2,
                "task.seq_len": 8,
                "task.n_tokens": 10,
                "task.repeat_len": 3,
                "task.n_examples": 60,
                "task.n_train": 40,
            }
        )
    if m.arch == "transformer":
        o.update({"model.d_model": 16, "model.n_heads": 2, "model.d_head": 8, "model.d_mlp": 32})
    elif m.fixed_embedding == "none":
        o.update({"model.d_model": 16, "model.d_mlp": min(m.d_mlp, 16)})
    if cfg.optim.grad_filter == "ma":
        o["optim.filter_window"] = 2
    if cfg.train.batch_size is not None:
        o["train.batch_size"] = 2048 if kind == "s5" else 16
    return apply_overrides(cfg, o)


@pytest.mark.parametrize("name", list(ZOO_PRESETS))
def test_every_zoo_preset_trains_at_tiny_size(name, tmp_path):
    cfg = shrink(get_preset(name))
    run = loop.train(cfg, tmp_path / "run", progress=False)
    assert run.config == cfg
    m = run.metrics
    assert m.index.max() == 3 and math.isfinite(float(m.loc[3, "train_loss"]))
    if cfg.task.kind == "multi":
        assert {"test_acc_op0", "test_acc_op1"} <= set(m.columns)
    if cfg.task.kind in SEQUENCE_KINDS:
        assert "test_seq_acc" in m.columns and run.meta["forward"] == "sequence"
    if cfg.task.kind == "digit_addition":
        assert {f"test_loss_ans{j}" for j in range(3)} <= set(m.columns)  # per digit of the 3-digit sum
    if cfg.train.softmax_collapse:
        assert "sc_train" in m.columns
    if (
        cfg.task.kind == "modular"
        and cfg.task.pairs == "all"
        and not cfg.model.attn_only
        and cfg.task.formula in ("a+b", "a*b", "a-b")
    ):
        assert "ffs" in m.columns  # progress measures ran


#: (preset prefix, the paper's model): openai/grok's decoder and Grokfast's main.py are 2-layer LayerNorm transformers,
#: width 128, 4 heads, FFN 4x (ReLU / exact GELU), learned or fixed positions; Omnigrok uses Nanda's 1-layer model.
FAITHFUL_MODELS = {
    "power-": dict(
        n_layers=2, d_model=128, n_heads=4, d_head=32, d_mlp=512, act_fn="relu", normalization_type="LN", biases="none"
    ),
    "grokfast-": dict(n_layers=2, d_model=128, n_heads=4, d_head=32, d_mlp=512, act_fn="gelu", normalization_type="LN"),
    "omnigrok-": dict(n_layers=1, d_model=128, n_heads=4, d_head=32, d_mlp=512, act_fn="relu", normalization_type=None),
}


@pytest.mark.parametrize("prefix", list(FAITHFUL_MODELS))
def test_paper_presets_use_their_papers_architecture(prefix):
    names = [n for n in ZOO_PRESETS if n.startswith(prefix)]
    assert len(names) >= 2
    for name in names:
        cfg = get_preset(name)
        m = cfg.model
        for field, want in FAITHFUL_MODELS[prefix].items():
            assert getattr(m, field) == want, (name, field)
        assert m.arch == "transformer" and m.positional_embedding_type == "standard" and not m.attn_only
        model = build_model(m, d_vocab=cfg.task.p + 1, d_vocab_out=cfg.task.p, n_ctx=3)
        ln_names = {k for k in model.state_dict() if ".ln" in k or k.startswith("ln_final")}
        if m.normalization_type == "LN":  # TransformerLens names: ln1/ln2 per block and ln_final, weight and bias
            want_ln = {f"blocks.{i}.{ln}.{wb}" for i in range(m.n_layers) for ln in ("ln1", "ln2") for wb in "wb"}
            assert ln_names == want_ln | {"ln_final.w", "ln_final.b"}, name
        else:
            assert ln_names == set(), name
        assert {k for k in model.state_dict() if "W_in" in k} == {f"blocks.{i}.mlp.W_in" for i in range(m.n_layers)}


def test_a_grokfast_run_resumes_exactly(tmp_path):
    cfg = apply_overrides(
        shrink(get_preset("grokfast-ema"), epochs=6),
        {"train.batch_size": None, "train.checkpoint_every": 3, "train.checkpoint_early": False},
    )
    full = loop.train(cfg, tmp_path / "full", progress=False)
    with interrupted_at_update(5):
        loop.train(cfg, tmp_path / "part", progress=False)
    resumed = loop.resume(tmp_path / "part", progress=False)
    a, b = full.metrics, resumed.metrics
    assert a["train_loss"].tolist() == b["train_loss"].tolist()


def test_l1_and_fixed_norm_runs_keep_their_promises(tmp_path):
    cfg = apply_overrides(shrink(get_preset("omnigrok-fixed-norm")), {"train.measure_every": 0})
    task = make_task(cfg.task)
    w0 = global_norm(
        [
            (n, p)
            for n, p in build_model(
                cfg.model, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=3
            ).named_parameters()
        ]
    )
    loop.train(cfg, tmp_path / "fn", progress=False)
    from grokscope.store.files import load_tensors

    tensors, _ = load_tensors(tmp_path / "fn" / "state.safetensors")
    w = sum(
        float((t.double() ** 2).sum())
        for k, t in tensors.items()
        if k.startswith("model.") and not k.split(".")[-1].startswith(("b_Q", "b_K", "b_V", "b_O", "b_U"))
    )
    assert math.sqrt(w) == pytest.approx(w0, rel=1e-6)
    parity = apply_overrides(
        shrink(get_preset("pair-sparse-parity"), epochs=30), {"optim.weight_decay": 5.0, "optim.lr": 0.05}
    )
    loop.train(parity, tmp_path / "l1", progress=False)
    tensors, _ = load_tensors(tmp_path / "l1" / "state.safetensors")
    assert (tensors["model.mlp.W_in"] == 0).any()  # the prox step makes exact zeros


# --------------------------------------------------------------------------- analyses


def test_spectra_in_both_bases_separate_addition_from_multiplication_waves():
    from grokscope.measures.fourier import discrete_log

    p = 13
    t = torch.arange(p, dtype=torch.float64)
    additive = torch.stack([torch.cos(2 * math.pi * 2 * t / p), torch.sin(2 * math.pi * 2 * t / p)], 1)
    i = discrete_log(p)[1:].double()
    mult = torch.zeros(p, 2, dtype=torch.float64)
    mult[1:, 0], mult[1:, 1] = torch.cos(2 * math.pi * i / (p - 1)), torch.sin(2 * math.pi * i / (p - 1))
    a, m = spectra_both_bases(additive, p), spectra_both_bases(mult, p)
    assert a["ffs_add"] == pytest.approx(1 / 6) and a["fcr_add"] == pytest.approx(1.0) and a["top_add"][0] == 2
    assert m["ffs_log"] == pytest.approx(1 / 5) and m["fcr_log"] == pytest.approx(1.0) and m["top_log"][0] == 1
    assert m["ffs_add"] > 0.5  # dense in the additive basis


def test_operand_asymmetry_and_parity_bits():
    p = 7
    a, b = torch.arange(p).repeat_interleave(p), torch.arange(p).repeat(p)
    sym = torch.stack([torch.cos(2 * math.pi * (a + b) / p)], 1)
    asym = torch.stack([torch.cos(2 * math.pi * a / p) + 0.1 * torch.cos(2 * math.pi * b / p)], 1)
    assert operand_asymmetry(sym, p)["asymmetry"] == pytest.approx(0.0, abs=1e-12)
    r = operand_asymmetry(asym, p)
    assert r["asymmetry"] > 0.5 and r["energy_a"] > r["energy_b"]
    model = VectorMLP(ModelConfig(arch="vector_mlp", d_mlp=3), d_vocab=2, d_vocab_out=2, n_ctx=6)
    with torch.no_grad():
        model.mlp.W_in.zero_()
        model.mlp.W_in[[0, 1, 2], 0] = torch.tensor([1.0, -1.0, 0.9])
        model.mlp.W_in[4, 1] = 0.01
    rows = parity_neuron_bits(model)
    assert rows[0]["neuron"] == 0 and rows[0]["bits"] == [0, 1, 2] and len(rows) == 1
