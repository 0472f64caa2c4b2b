"""``model.biases`` (issue 22, item 1): "mlp" (the default, today's model), "all" (TransformerLens's layout: every
bias trained) and "none" (every bias a zero buffer). Each layout keeps the TransformerLens state-dict keys; the
fast path runs for all three and equals the general path (values and gradients); the optimisers, the ensemble and
the CLI see the layout."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from grokscope.cli import main
from grokscope.config import ConfigError, ModelConfig, apply_overrides
from grokscope.models import build_model
from grokscope.models.forward import choose_forward
from grokscope.store import load_run
from grokscope.tasks import make_task
from grokscope.training import train
from grokscope.training.muon import split_for_muon
from grokscope.training.optim import make_optimizer

pytestmark = pytest.mark.usefixtures("one_thread")

ATTN_BIASES = ("blocks.0.attn.b_Q", "blocks.0.attn.b_K", "blocks.0.attn.b_V", "blocks.0.attn.b_O")
MLP_BIASES = ("blocks.0.mlp.b_in", "blocks.0.mlp.b_out")
ALL_BIASES = (*ATTN_BIASES, *MLP_BIASES, "unembed.b_U")
# today's model (before the knob): names and order of its parameters
MLP_PARAMS = [
    "embed.W_E",
    "pos_embed.W_pos",
    "blocks.0.attn.W_Q",
    "blocks.0.attn.W_K",
    "blocks.0.attn.W_V",
    "blocks.0.attn.W_O",
    "blocks.0.mlp.W_in",
    "blocks.0.mlp.b_in",
    "blocks.0.mlp.W_out",
    "blocks.0.mlp.b_out",
    "unembed.W_U",
]


def _config(tiny_config, biases: str, **more):
    overrides = {
        "model.biases": biases,
        "task.p": 11,
        "train.epochs": 12,
        "train.log_every": 4,
        "train.checkpoint_every": 6,
        "train.measure_every": 0,
        **more,
    }
    return apply_overrides(tiny_config, overrides)


def _model(cfg):
    task = make_task(cfg.task)
    return build_model(cfg.model, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=task.n_ctx), task


def _nonzero_biases(model, seed: int = 5):
    """Every bias (parameter or buffer) set to noise, so that a forward that drops one shows it."""
    gen = torch.Generator().manual_seed(seed)
    named = dict(model.named_parameters()) | dict(model.named_buffers())
    with torch.no_grad():
        for name in ALL_BIASES:
            named[name].copy_(0.5 * torch.randn(named[name].shape, generator=gen))
    return model


def test_mlp_layout_is_today_s_model_names_order_and_init_draws(tiny_config):
    cfg = _config(tiny_config, "mlp")
    assert ModelConfig().biases == "mlp"
    model, task = _model(cfg)
    assert [n for n, _ in model.named_parameters()] == MLP_PARAMS
    assert [n for n, _ in model.named_buffers() if "b_" in n] == [*ATTN_BIASES, "unembed.b_U"]
    # the init, recomputed here: one generator seeded by init_seed, draws in parameter order, biases drawn nothing
    gen = torch.Generator().manual_seed(cfg.model.init_seed)
    d_model = cfg.model.d_model
    state = model.state_dict()
    for name in MLP_PARAMS:
        if ".b_" in name:
            assert torch.equal(state[name], torch.zeros_like(state[name])), name
            continue
        std = 1 / math.sqrt(task.d_vocab) if name == "unembed.W_U" else 1 / math.sqrt(d_model)
        assert torch.equal(state[name], torch.randn(state[name].shape, generator=gen) * std), name


@pytest.mark.parametrize("biases", ["all", "none"])
def test_every_layout_has_the_same_keys_and_initial_weights(tiny_config, biases):
    ref, _ = _model(_config(tiny_config, "mlp"))
    model, _ = _model(_config(tiny_config, biases))
    a, b = ref.state_dict(), model.state_dict()
    assert set(a) == set(b)
    for name in a:
        assert torch.equal(a[name], b[name]), name
    trained = {n for n, _ in model.named_parameters()}
    assert trained & set(ALL_BIASES) == (set(ALL_BIASES) if biases == "all" else set())
    assert trained - set(ALL_BIASES) == {n for n in MLP_PARAMS if ".b_" not in n}


def test_none_trains_with_b_in_and_b_out_exactly_zero_and_outside_the_optimiser(tiny_config, tmp_path):
    cfg = _config(tiny_config, "none")
    model, _ = _model(cfg)
    in_optimiser = {id(p) for group in make_optimizer(model, cfg.optim).param_groups for p in group["params"]}
    buffers = dict(model.named_buffers())
    assert all(id(buffers[n]) not in in_optimiser for n in ALL_BIASES)
    assert len(in_optimiser) == len(MLP_PARAMS) - 2
    run = train(cfg, tmp_path / "none", progress=False)
    assert run.metrics["train_loss"].iloc[-1] < run.metrics["train_loss"].iloc[0]
    state = run.load_state_dict()
    for name in ALL_BIASES:
        assert torch.equal(state[name], torch.zeros_like(state[name])), name
    assert run.load_model().cfg.biases == "none"


def test_all_trains_every_bias(tiny_config, tmp_path):
    cfg = _config(tiny_config, "all")
    run = train(cfg, tmp_path / "all", progress=False)
    assert run.meta["forward"] == "fast"
    state = run.load_state_dict()
    for name in ALL_BIASES:  # started at zero; trained (b_K's gradient is zero up to rounding: see below)
        assert state[name].abs().max() > 1e-4 or name == "blocks.0.attn.b_K", name
    # the default leaves the attention and unembedding biases at zero
    mlp = train(_config(tiny_config, "mlp"), tmp_path / "mlp", progress=False).load_state_dict()
    for name in (*ATTN_BIASES, "unembed.b_U"):
        assert torch.equal(mlp[name], torch.zeros_like(mlp[name])), name
    assert mlp["blocks.0.mlp.b_in"].abs().max() > 1e-4


@pytest.mark.parametrize("biases", ["mlp", "all", "none"])
def test_the_fast_path_runs_and_equals_the_general_path_in_values_and_gradients(tiny_config, biases):
    model, task = _model(_config(tiny_config, biases))
    _nonzero_biases(model)
    choice = choose_forward(model, task)
    assert choice.path == "fast", choice.why
    tokens, labels = task.tokens, task.labels
    grads = {}
    for path, fn in (("fast", choice.fn), ("general", model)):
        model.zero_grad(set_to_none=True)
        logits = fn(tokens)
        torch.nn.functional.cross_entropy(logits.double(), labels).backward()
        grads[path] = (logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()})
    (fast, g_fast), (general, g_general) = grads["fast"], grads["general"]
    torch.testing.assert_close(fast, general, atol=2e-5, rtol=1e-5)
    assert set(g_fast) == set(g_general) == {n for n, _ in model.named_parameters()}
    for name, g in g_general.items():
        torch.testing.assert_close(g_fast[name], g, atol=1e-5, rtol=1e-4, msg=name)
    if biases == "all":
        assert all(g_fast[n].abs().max() > 0 for n in ALL_BIASES if n != "blocks.0.attn.b_K")
    # the biases reach the logits: zeroing them changes the fast path's output
    with torch.no_grad():
        for name, t in (dict(model.named_parameters()) | dict(model.named_buffers())).items():
            if name in ALL_BIASES:
                t.zero_()
        assert (choice.fn(tokens) - fast).abs().max() > 1e-3


def test_b_k_has_no_gradient_as_softmax_is_shift_invariant(tiny_config):
    """b_K adds b_K . q to every key's score of a query: the softmax cancels it, so its gradient is zero on both
    paths (a closed form the fast path's kb term must respect)."""
    model, task = _model(_config(tiny_config, "all"))
    _nonzero_biases(model)
    fn = choose_forward(model, task).fn
    torch.nn.functional.cross_entropy(fn(task.tokens), task.labels).backward()
    assert model.blocks[0].attn.b_K.grad.abs().max() < 1e-6


@pytest.mark.parametrize("biases", ["all", "none"])
def test_ensemble_members_match_single_runs(tiny_config, tmp_path, biases):
    from grokscope.training.ensemble import train_ensemble

    configs = [
        _config(tiny_config, biases, name="a", **{"model.init_seed": 1}),
        _config(tiny_config, biases, name="b", **{"model.init_seed": 2, "optim.lr": 3e-3}),
    ]
    runs = train_ensemble(configs, [tmp_path / f"e{k}" for k in range(2)], progress=False)
    for k, cfg in enumerate(configs):
        single = train(cfg, tmp_path / f"s{k}", progress=False)
        a, b = runs[k].load_state_dict(), single.load_state_dict()
        assert set(a) == set(b)
        for name in b:
            if name == "blocks.0.attn.b_K":  # its gradient is rounding noise (the test above), which AdamW
                continue  # turns into lr-sized steps: the two runs' noise differs; its effect on the logits is nil
            torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5, msg=name)
        moved = [n for n in ALL_BIASES if b[n].abs().max() > 0 and n != "blocks.0.attn.b_K"]
        assert moved == ([n for n in ALL_BIASES if n != "blocks.0.attn.b_K"] if biases == "all" else [])
        assert biases == "all" or not b["blocks.0.attn.b_K"].any()
        me, ms = runs[k].metrics, single.metrics
        assert ((me - ms).abs() <= 1e-5 * ms.abs() + 1e-7).all().all()


def test_muon_gives_every_bias_to_adamw(tiny_config):
    model, _ = _model(_config(tiny_config, "all"))
    muon, adamw = split_for_muon(model)
    assert {n for n, _ in adamw} >= set(ALL_BIASES)
    assert [n for n, _ in muon] == [
        "blocks.0.attn.W_Q",
        "blocks.0.attn.W_K",
        "blocks.0.attn.W_V",
        "blocks.0.attn.W_O",
        "blocks.0.mlp.W_in",
        "blocks.0.mlp.W_out",
    ]
    default, _ = _model(_config(tiny_config, "mlp"))
    assert [n for n, _ in split_for_muon(default)[0]] == [n for n, _ in muon]
    none, _ = _model(_config(tiny_config, "none"))
    assert not any(".b_" in n for n, _ in (*split_for_muon(none)[0], *split_for_muon(none)[1]))


def test_cli_train_with_biases_all_and_a_bad_value_is_one_line_exit_2(tmp_path, capsys):
    argv = [
        "train",
        "--preset",
        "tiny",
        "--set",
        "task.p=11",
        "--set",
        "train.epochs=6",
        "--set",
        "train.log_every=3",
        "--set",
        "train.measure_every=0",
        "--set",
        "train.checkpoint_every=6",
        "--quiet",
    ]
    assert main([*argv, "--set", "model.biases=all", "--out", str(tmp_path / "all")]) == 0
    from grokscope.store import load_run

    run = load_run(tmp_path / "all")
    assert run.config.model.biases == "all"
    assert run.load_state_dict()["unembed.b_U"].abs().max() > 0
    capsys.readouterr()
    assert main([*argv, "--set", "model.biases=some", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "model.biases" in err and "'some'" in err, err
    assert not (tmp_path / "bad").exists()


def test_biases_is_a_transformer_knob():
    with pytest.raises(ConfigError, match="model.biases"):
        ModelConfig(arch="mlp", biases="all")
    with pytest.raises(ConfigError, match="model.biases"):
        ModelConfig(biases="attention")
    assert dataclasses.replace(ModelConfig(), biases="none").biases == "none"


def test_biases_layout_names_the_layout_that_holds_a_model_as_it_is(tiny_config):
    from grokscope.interop import biases_layout

    for biases in ("mlp", "all", "none"):
        model, _ = _model(_config(tiny_config, biases))
        assert biases_layout(model) == biases  # a grokscope model: its own layout
    state = {k: v.clone() for k, v in _model(_config(tiny_config, "mlp"))[0].state_dict().items()}
    assert biases_layout(state) == "none"  # a state dict: only values count, and every bias is zero at init
    state["blocks.0.mlp.b_out"][0] = 0.1
    assert biases_layout(state) == "mlp"
    state["unembed.b_U"][3] = -0.2
    assert biases_layout(state) == "all"


def test_a_hooked_transformer_converts_with_its_layout_and_keeps_training_what_it_trained(tiny_config):
    pytest.importorskip("transformer_lens")
    import warnings

    import transformer_lens

    from grokscope.interop import biases_layout, from_hooked_transformer, hooked_transformer_config

    cfg = _config(tiny_config, "mlp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hooked = transformer_lens.HookedTransformer(hooked_transformer_config(cfg, seed=0))
    assert biases_layout(hooked) == "all"  # TransformerLens trains every bias (zero at its init)
    for name, p in hooked.named_parameters():
        if name.rsplit(".", 1)[-1] in ("b_Q", "b_K", "b_V", "b_O", "b_U"):
            p.requires_grad_(False)
    assert biases_layout(hooked) == "mlp"
    _nonzero_biases(hooked)
    layout = biases_layout(hooked)
    assert layout == "all"  # nonzero attention biases: only "all" trains them on
    cfg = apply_overrides(cfg, {"model.biases": layout})
    ours = from_hooked_transformer(hooked, cfg)
    assert {n for n, _ in ours.named_parameters()} >= set(ALL_BIASES)
    task = make_task(cfg.task)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.testing.assert_close(ours.forward_all(task.tokens), hooked(task.tokens), atol=1e-5, rtol=0)


@pytest.mark.parametrize("biases", ["all", "none"])
def test_the_gpu_form_of_the_fast_path_equals_the_general_path_on_the_cpu(tiny_config, biases):
    """fast_logits_batched (what CUDA runs) with trained or absent biases: values and gradients."""
    from grokscope.models.fast import FastPlan, fast_logits_batched, fast_tables, model_tensors

    model, task = _model(_config(tiny_config, biases))
    _nonzero_biases(model, seed=8)
    out = {}
    for path in ("batched", "general"):
        model.zero_grad(set_to_none=True)
        if path == "batched":
            plan = FastPlan(task.tokens.unsqueeze(0), model.d_vocab, model.cfg.n_heads)
            logits = fast_logits_batched(fast_tables(model_tensors(model), task.p), plan, model.cfg.act_fn)[0]
        else:
            logits = model(task.tokens)
        torch.nn.functional.cross_entropy(logits, task.labels).backward()
        out[path] = (logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()})
    torch.testing.assert_close(out["batched"][0], out["general"][0], atol=2e-5, rtol=1e-5)
    for name, g in out["general"][1].items():
        torch.testing.assert_close(out["batched"][1][name], g, atol=1e-5, rtol=1e-4, msg=name)


def test_sum_sq_weights_counts_the_biases_a_layout_trains(tiny_config):
    from grokscope.measures import sum_sq_weights

    models = {b: _nonzero_biases(_model(_config(tiny_config, b))[0]) for b in ("mlp", "all", "none")}
    state = models["all"].state_dict()
    sq = {n: float((state[n].double() ** 2).sum()) for n in ALL_BIASES}
    attn_unembed = sum(v for n, v in sq.items() if n not in MLP_BIASES)
    mlp = sum(sq[n] for n in MLP_BIASES)
    assert math.isclose(sum_sq_weights(models["all"]) - sum_sq_weights(models["mlp"]), attn_unembed, rel_tol=1e-9)
    assert math.isclose(sum_sq_weights(models["mlp"]) - sum_sq_weights(models["none"]), mlp, rel_tol=1e-9)


@pytest.mark.parametrize("biases", ["all", "none"])
def test_an_interrupted_run_of_each_layout_resumes_bitwise(tiny_config, tmp_path, biases):
    from faults_util import interrupted_at_update

    from grokscope.training import resume

    cfg = _config(tiny_config, biases, **{"train.epochs": 24})
    straight = train(cfg, tmp_path / "straight", progress=False)
    with interrupted_at_update(15):
        train(cfg, tmp_path / "crashed", progress=False)
    from grokscope.store import load_run

    assert load_run(tmp_path / "crashed").metrics.index[-1] < 24
    resumed = resume(tmp_path / "crashed", progress=False)
    assert resumed.metrics.equals(straight.metrics)
    for step in straight.checkpoints:
        a, b = straight.load_state_dict(step), resumed.load_state_dict(step)
        assert all(torch.equal(a[k], b[k]) for k in a), step


def test_set_a_string_field_to_the_word_none_and_an_optional_field_to_null():
    from grokscope.config import apply_overrides, parse_override
    from grokscope.presets import tiny

    cfg = apply_overrides(
        tiny(),
        dict(parse_override(s) for s in ("model.biases=none", "optim.grad_filter=none", "model.d_vocab_out=none")),
    )
    assert (cfg.model.biases, cfg.optim.grad_filter, cfg.model.d_vocab_out) == ("none", "none", None)
    ln = apply_overrides(tiny(), {"model.normalization_type": "LN"})
    assert apply_overrides(ln, dict([parse_override("model.normalization_type=None")])).model.normalization_type is None


def test_from_refuses_another_bias_layout_and_init_from_leaves_its_zero_biases_zero(tmp_path, capsys):
    base = ["train", "--quiet", "--set", "train.epochs=6", "--set", "train.measure_every=0"]
    assert main([*base, "--preset", "tiny", "--out", str(tmp_path / "p")]) == 0
    capsys.readouterr()
    assert main([*base, "--from", str(tmp_path / "p"), "--set", "model.biases=none", "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "model.biases" in err and "--init-from" in err, err
    assert (
        main(
            [
                *base,
                "--preset",
                "tiny",
                "--init-from",
                str(tmp_path / "p"),
                "--init-parts",
                "all",
                "--set",
                "model.biases=none",
                "--out",
                str(tmp_path / "i"),
            ]
        )
        == 0
    )
    parent, child = load_run(tmp_path / "p").load_state_dict(), load_run(tmp_path / "i").load_state_dict(0)
    assert parent["blocks.0.mlp.b_in"].abs().max() > 0 and not child["blocks.0.mlp.b_in"].any()
    assert torch.equal(parent["blocks.0.mlp.W_in"], child["blocks.0.mlp.W_in"])
