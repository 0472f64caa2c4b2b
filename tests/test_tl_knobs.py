"""TransformerLens architecture knobs (issue 22 item 1): a grokscope transformer with each combination in a grid
loads into a ``HookedTransformer`` with identical logits, and a HookedTransformer loads back into grokscope."""

import dataclasses
import importlib.util
import itertools
import math
import warnings

import pytest
import torch

from grokscope import ConfigError, from_hooked_transformer
from grokscope.config import ModelConfig
from grokscope.interop import hooked_from_state_dict
from grokscope.models import build_model
from grokscope.models.fast import fast_ineligibility
from grokscope.presets import tiny
from grokscope.tasks import make_task

NORMS = (None, "LN", "LNPre", "RMS", "RMSPre")
# 5 normalisations x (1 or 2 layers) x (relu, gelu) x (with or without MLP), thinned to 20 combinations
GRID = [
    (norm, n_layers, act, attn_only)
    for (norm, n_layers, act, attn_only) in itertools.product(NORMS, (1, 2), ("relu", "gelu"), (False, True))
    if not (act == "gelu" and attn_only)
] + [("LN", 2, act, False) for act in ("gelu_new", "silu", "solu")]
GRID += [(None, 1, act, False) for act in ("silu", "solu")]
# (normalisation, layers, use_attn_scale, parallel_attn_mlp)
BLOCKS = [(None, 1, False, False), ("LN", 2, False, True), (None, 2, True, True), ("RMS", 1, True, True)]


def _cfg(norm, n_layers, act, attn_only):
    base = tiny()
    model = dataclasses.replace(
        base.model, normalization_type=norm, n_layers=n_layers, act_fn=act, attn_only=attn_only, init_seed=3
    )
    return dataclasses.replace(base, model=model)


def _perturbed(cfg):
    """A grokscope model of ``cfg`` whose normalisation weights are not the identity (so a dropped LN shows)."""
    task = make_task(cfg.task)
    model = build_model(cfg.model, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=task.n_ctx)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.split(".")[-1] in ("w", "b"):
                param.add_(0.3 * torch.randn(param.shape, generator=gen))
    return model.eval(), task


@pytest.mark.parametrize("norm,n_layers,act,attn_only", GRID)
def test_grokscope_model_and_hooked_transformer_give_identical_logits_both_ways(norm, n_layers, act, attn_only):
    pytest.importorskip("transformer_lens")
    assert len(GRID) >= 12
    cfg = _cfg(norm, n_layers, act, attn_only)
    model, task = _perturbed(cfg)
    keys = set(model.state_dict())
    if norm in ("LN", "RMS"):
        assert "blocks.0.ln1.w" in keys and "ln_final.w" in keys
        assert ("blocks.0.ln1.b" in keys) == (norm == "LN")
    else:
        assert not any(".ln" in k or k.startswith("ln_final") for k in keys)
    hooked = hooked_from_state_dict(cfg, model.state_dict())
    assert hooked.cfg.normalization_type == norm
    tokens = task.tokens
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = model.forward_all(tokens)
        theirs = hooked(tokens)
        last = model(tokens)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    torch.testing.assert_close(last, ours[:, -1], atol=1e-5, rtol=0)
    back = from_hooked_transformer(hooked, cfg)
    with torch.no_grad():
        torch.testing.assert_close(back.forward_all(tokens), theirs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("norm,n_layers,scale,parallel", BLOCKS)
def test_attention_scale_and_parallel_blocks_match_transformer_lens(norm, n_layers, scale, parallel):
    pytest.importorskip("transformer_lens")
    cfg = _cfg(norm, n_layers, "relu", False)
    cfg = dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, use_attn_scale=scale, parallel_attn_mlp=parallel)
    )
    model, task = _perturbed(cfg)
    hooked = hooked_from_state_dict(cfg, model.state_dict())
    assert (hooked.cfg.use_attn_scale, hooked.cfg.parallel_attn_mlp) == (scale, parallel)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = hooked(task.tokens)
        torch.testing.assert_close(model.forward_all(task.tokens), theirs, atol=1e-5, rtol=0)
        torch.testing.assert_close(model(task.tokens), theirs[:, -1], atol=1e-5, rtol=0)
        torch.testing.assert_close(
            from_hooked_transformer(hooked, cfg).forward_all(task.tokens), theirs, atol=1e-5, rtol=0
        )
    why = fast_ineligibility(model, task)
    assert why is not None and ("scaled attention" in why or "normalisation" in why or n_layers == 2)


def test_normalisation_makes_the_fast_path_ineligible_and_says_why():
    cfg = _cfg("LN", 1, "relu", False)
    model, task = _perturbed(cfg)
    why = fast_ineligibility(model, task)
    assert why is not None and "normalisation" in why
    plain, task = _perturbed(_cfg(None, 1, "relu", False))
    assert fast_ineligibility(plain, task) is None
    solu, task = _perturbed(_cfg(None, 1, "solu", False))
    why = fast_ineligibility(solu, task)
    assert why is not None and "solu" in why


def test_default_normalisation_leaves_the_state_dict_and_init_unchanged():
    cfg = _cfg(None, 1, "relu", False)
    a, _ = _perturbed(cfg)
    b, _ = _perturbed(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, normalization_type="LN")))
    for k, v in a.state_dict().items():  # LN draws nothing: every shared weight is the same draw
        assert torch.equal(v, b.state_dict()[k]), k


def test_unknown_normalisation_is_one_config_error_naming_the_field():
    with pytest.raises(ConfigError, match="model.normalization_type"):
        ModelConfig(normalization_type="BN")
    with pytest.raises(ConfigError, match="model.normalization_type"):
        ModelConfig(arch="mlp", normalization_type="LN")


# ------------------------------------------------------------------ positional embeddings (rotary, shortformer)

# (positions, normalisation, layers, attn_only, parallel_attn_mlp, rotary_dim): 14 combinations
POS_GRID = [
    (pos, norm, n_layers, False, False, None)
    for pos, norm, n_layers in itertools.product(("rotary", "shortformer"), (None, "LN"), (1, 2))
] + [
    ("rotary", "RMS", 2, True, False, None),
    ("rotary", "LNPre", 1, False, True, None),
    ("rotary", None, 2, False, False, 8),
    ("rotary", "LN", 1, False, False, 2),
    ("shortformer", "RMSPre", 2, True, False, None),
    ("shortformer", "LN", 2, False, True, None),
]


def _pos_cfg(pos, norm, n_layers, attn_only=False, parallel=False, rotary_dim=None, **more):
    cfg = _cfg(norm, n_layers, "relu", attn_only)
    model = dataclasses.replace(
        cfg.model, positional_embedding_type=pos, parallel_attn_mlp=parallel, rotary_dim=rotary_dim, **more
    )
    return dataclasses.replace(cfg, model=model)


def _logits(model, tokens):
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.forward_all(tokens) if hasattr(model, "forward_all") else model(tokens)


@pytest.mark.parametrize("pos,norm,n_layers,attn_only,parallel,rotary_dim", POS_GRID)
def test_rotary_and_shortformer_models_load_into_hooked_transformer_with_identical_logits(
    pos, norm, n_layers, attn_only, parallel, rotary_dim
):
    pytest.importorskip("transformer_lens")
    cfg = _pos_cfg(pos, norm, n_layers, attn_only, parallel, rotary_dim)
    model, task = _perturbed(cfg)
    keys = set(model.state_dict())
    assert ("pos_embed.W_pos" in keys) == (pos == "shortformer")  # rotary: no learned positions
    assert not any("rotary" in k for k in keys)  # sin/cos tables are config, not weights
    hooked = hooked_from_state_dict(cfg, model.state_dict())
    assert hooked.cfg.positional_embedding_type == pos
    if pos == "rotary":
        assert hooked.cfg.rotary_dim == (rotary_dim or cfg.model.d_head)
        assert "blocks.0.attn.rotary_sin" in hooked.state_dict()  # TransformerLens keeps them as buffers
    theirs = _logits(hooked, task.tokens)
    torch.testing.assert_close(_logits(model, task.tokens), theirs, atol=1e-5, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(model(task.tokens), theirs[:, -1], atol=1e-5, rtol=0)  # the last-position path
    back = from_hooked_transformer(hooked, cfg)  # TL's rotary_sin/cos buffers are ignored, not an error
    torch.testing.assert_close(_logits(back, task.tokens), theirs, atol=1e-5, rtol=0)
    assert len(POS_GRID) + len(GRID) + len(BLOCKS) >= 12


def test_rotary_pairs_dims_i_and_i_plus_half_as_transformer_lens_does_by_default():
    """GPT-NeoX halves (TL's default), not GPT-J's adjacent pairs: a HookedTransformer told to rotate adjacent
    pairs computes other logits from the same weights, so the round trip above would catch the wrong pairing."""
    pytest.importorskip("transformer_lens")
    cfg = _pos_cfg("rotary", None, 1)
    model, task = _perturbed(cfg)
    adjacent = hooked_from_state_dict(cfg, model.state_dict(), rotary_adjacent_pairs=True)
    gap = (_logits(model, task.tokens) - _logits(adjacent, task.tokens)).abs().max()
    assert gap > 1e-3


def test_apply_rotary_is_a_complex_rotation_by_position_times_frequency():
    """Pair (x_i, x_{i+r/2}) read as z = x_i + i x_{i+r/2} becomes z * exp(i pos base^(-2i/r)); dims past r pass."""
    from grokscope.models.transformer import apply_rotary, rotary_tables

    n_pos, r, d_head, base = 5, 6, 8, 100.0
    x = torch.randn(2, n_pos, 3, d_head, dtype=torch.float64)
    sin, cos = rotary_tables(n_pos, r, base)
    out = apply_rotary(x, sin.double(), cos.double())
    theta = base ** (-2.0 * torch.arange(r // 2, dtype=torch.float64) / r)  # [r/2]
    phase = torch.polar(
        torch.ones(n_pos, r // 2, dtype=torch.float64), torch.arange(n_pos, dtype=torch.float64)[:, None] * theta
    )  # [pos, r/2]
    z = torch.complex(x[..., : r // 2], x[..., r // 2 : r]) * phase[None, :, None, :]
    torch.testing.assert_close(out[..., : r // 2], z.real, atol=1e-6, rtol=0)
    torch.testing.assert_close(out[..., r // 2 : r], z.imag, atol=1e-6, rtol=0)
    assert torch.equal(out[..., r:], x[..., r:])
    # relative positions: <q at m, k at n> depends on m - n only (same vectors placed at shifted positions)
    q, k = torch.randn(r, dtype=torch.float64), torch.randn(r, dtype=torch.float64)
    rot = apply_rotary(
        torch.stack([q, k]).expand(n_pos, 2, r).permute(1, 0, 2)[:, :, None, :], sin.double(), cos.double()
    )[:, :, 0]  # [2, pos, r]: q and k rotated at every position
    assert torch.allclose(rot[0, 3] @ rot[1, 1], rot[0, 4] @ rot[1, 2]) and torch.allclose(
        rot[0, 2] @ rot[1, 0], rot[0, 4] @ rot[1, 2]
    )


def test_shortformer_positions_reach_queries_and_keys_but_not_the_residual_stream_or_values():
    cfg = _pos_cfg("shortformer", None, 1)
    model, task = _perturbed(cfg)
    _, cache = model.run_with_cache(task.tokens[:4])
    torch.testing.assert_close(cache["blocks.0.hook_resid_pre"], model.embed.W_E[task.tokens[:4]])
    with torch.no_grad():
        model.pos_embed.W_pos.add_(1.0)
    _, moved = model.run_with_cache(task.tokens[:4])
    assert torch.equal(moved["blocks.0.attn.hook_v"], cache["blocks.0.attn.hook_v"])
    assert not torch.allclose(moved["blocks.0.attn.hook_q"], cache["blocks.0.attn.hook_q"])
    assert not torch.allclose(moved["blocks.0.attn.hook_k"], cache["blocks.0.attn.hook_k"])


def test_rotary_hooks_carry_the_rotated_queries_and_keys():
    model, task = _perturbed(_pos_cfg("rotary", None, 1))
    _, cache = model.run_with_cache(task.tokens[:4])
    assert torch.equal(cache["blocks.0.attn.hook_rot_q"][:, 0], cache["blocks.0.attn.hook_q"][:, 0])  # position 0
    assert not torch.allclose(cache["blocks.0.attn.hook_rot_k"][:, 2], cache["blocks.0.attn.hook_k"][:, 2])
    assert "hook_pos_embed" not in cache


@pytest.mark.parametrize("pos", ["rotary", "shortformer"])
def test_fast_path_refuses_non_standard_positions_and_says_why(pos):
    from grokscope.models.forward import choose_forward

    model, task = _perturbed(_pos_cfg(pos, None, 1))
    choice = choose_forward(model, task)
    assert choice.path == "general" and pos in choice.why and "W_pos" in choice.why
    with torch.no_grad():
        torch.testing.assert_close(choice.fn(task.tokens), model.forward_all(task.tokens)[:, -1], atol=1e-6, rtol=0)
    standard, task = _perturbed(_pos_cfg("standard", None, 1))
    assert choose_forward(standard, task).path == "fast"


def test_shortformer_draws_the_standard_model_weights_and_rotary_draws_without_w_pos():
    a, _ = _perturbed(_pos_cfg("standard", None, 1))
    b, _ = _perturbed(_pos_cfg("shortformer", None, 1))
    c, _ = _perturbed(_pos_cfg("rotary", None, 1))
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert set(c.state_dict()) == set(a.state_dict()) - {"pos_embed.W_pos"}


def test_d_vocab_out_knob_widens_the_unembedding_and_round_trips():
    pytest.importorskip("transformer_lens")
    cfg = _pos_cfg("standard", "LN", 1, d_vocab_out=20)
    model, task = _perturbed(cfg)
    assert task.d_vocab_out == 13 and tuple(model.unembed.W_U.shape) == (cfg.model.d_model, 20)
    hooked = hooked_from_state_dict(cfg, model.state_dict())
    assert hooked.cfg.d_vocab_out == 20
    torch.testing.assert_close(_logits(model, task.tokens), _logits(hooked, task.tokens), atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="model.d_vocab_out"):
        _perturbed(_pos_cfg("standard", None, 1, d_vocab_out=12))


def test_positional_knobs_are_config_errors_naming_the_field_and_round_trip_through_json():
    from grokscope.config import ExperimentConfig

    for bad, field in [
        (dict(positional_embedding_type="alibi"), "positional_embedding_type"),
        (dict(arch="mlp", positional_embedding_type="rotary"), "positional_embedding_type"),
        (dict(rotary_dim=8), "rotary_dim"),  # rotary_dim without rotary positions
        (dict(positional_embedding_type="rotary", d_head=8, rotary_dim=10), "rotary_dim"),
        (dict(positional_embedding_type="rotary", rotary_dim=3), "rotary_dim"),
        (dict(positional_embedding_type="rotary", rotary_base=0.0), "rotary_base"),
        (dict(arch="mlp", d_vocab_out=20), "d_vocab_out"),
        (dict(d_vocab_out=0), "d_vocab_out"),
    ]:
        with pytest.raises(ConfigError, match=f"model.{field}"):
            ModelConfig(**bad)
    cfg = _pos_cfg("rotary", "LN", 2, rotary_dim=8, rotary_base=500.0, d_vocab_out=17)
    assert ExperimentConfig.from_json(cfg.to_json()) == cfg


@pytest.mark.parametrize("pos", ["rotary", "shortformer"])
def test_a_rotary_or_shortformer_run_trains_on_the_general_path_and_its_checkpoint_exports(pos, tmp_path):
    import grokscope

    cfg = _pos_cfg(pos, "LN", 2)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=10, checkpoint_every=5, log_every=5))
    run = grokscope.train(cfg, tmp_path / "run")
    assert run.meta["forward"] == "general"
    assert run.metrics["train_loss"].iloc[-1] < run.metrics["train_loss"].iloc[0]
    model = run.load_model()
    assert all("rotary" not in k for k in model.state_dict())
    if importlib.util.find_spec("transformer_lens") is None:
        return
    hooked = grokscope.to_hooked_transformer(run)
    tokens = run.task().tokens
    torch.testing.assert_close(_logits(model, tokens), _logits(hooked, tokens), atol=1e-5, rtol=0)


def test_gpt2_init_mode_is_transformer_lens_s_normal_with_std_0_8_over_sqrt_d_model():
    nanda, _ = _perturbed(_pos_cfg("standard", "LN", 2))
    gpt2, task = _perturbed(_pos_cfg("standard", "LN", 2, init_mode="gpt2"))
    d_model, std = nanda.cfg.d_model, 0.8 / math.sqrt(nanda.cfg.d_model)
    a, b = nanda.state_dict(), gpt2.state_dict()
    for k, v in a.items():  # the same draws, in the same order, at the other standard deviation
        if k.rsplit(".", 1)[-1].startswith("W_"):
            nanda_std = 1 / math.sqrt(task.d_vocab) if k.endswith("W_U") else 1 / math.sqrt(d_model)
            torch.testing.assert_close(b[k], v * (std / nanda_std), rtol=1e-5, atol=0)
        else:
            assert torch.equal(b[k], v), k  # biases 0, LayerNorm 1 and 0 (before _perturbed's noise: same noise)
    pooled = torch.cat([v.flatten() for k, v in b.items() if k.rsplit(".", 1)[-1].startswith("W_")])
    assert abs(pooled.std().item() / std - 1) < 0.05
    if importlib.util.find_spec("transformer_lens") is None:
        return
    from grokscope.interop import hooked_transformer_config

    cfg = _pos_cfg("standard", "LN", 2, init_mode="gpt2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import transformer_lens

        hooked = transformer_lens.HookedTransformer(hooked_transformer_config(cfg, seed=0))
    theirs = torch.cat([p.detach().flatten() for n, p in hooked.named_parameters() if "W_" in n])
    assert theirs.numel() == pooled.numel() and abs(theirs.std().item() / std - 1) < 0.05
    with pytest.raises(ConfigError, match="model.init_mode"):
        ModelConfig(init_mode="xavier_uniform")
    with pytest.raises(ConfigError, match="model.init_mode"):
        ModelConfig(arch="mlp", init_mode="gpt2")


# ------------------------------------------------------------------ biases on or off (model.biases)

# (biases, normalisation, layers, positions, attn_only, parallel_attn_mlp): 10 combinations, each trained a few
# steps first so that the biases "all" trains are nonzero when the logits are compared
BIAS_GRID = [
    ("all", None, 1, "standard", False, False),
    ("all", "LN", 2, "standard", False, False),
    ("all", "RMS", 1, "rotary", False, False),
    ("all", "LNPre", 2, "shortformer", True, False),
    ("all", "LN", 1, "standard", False, True),
    ("all", None, 2, "rotary", False, True),
    ("none", None, 1, "standard", False, False),
    ("none", "LN", 2, "rotary", False, False),
    ("none", "RMSPre", 1, "shortformer", True, False),
    ("none", "RMS", 2, "standard", False, True),
]
BIASES = ("attn.b_Q", "attn.b_K", "attn.b_V", "attn.b_O", "mlp.b_in", "mlp.b_out")


@pytest.mark.parametrize("biases,norm,n_layers,pos,attn_only,parallel", BIAS_GRID)
def test_trained_bias_layouts_load_into_hooked_transformer_with_identical_logits(
    biases, norm, n_layers, pos, attn_only, parallel, tmp_path
):
    import grokscope

    cfg = _pos_cfg(pos, norm, n_layers, attn_only, parallel, biases=biases)
    cfg = dataclasses.replace(
        cfg, train=dataclasses.replace(cfg.train, epochs=6, log_every=3, checkpoint_every=6, measure_every=0)
    )
    run = grokscope.train(cfg, tmp_path / "run", progress=False)
    state = run.load_state_dict()
    names = [f"blocks.{i}.{b}" for i in range(n_layers) for b in BIASES if not (attn_only and "mlp" in b)]
    names.append("unembed.b_U")
    for name in names:  # "all": every bias trained (b_K's gradient is zero up to rounding: it may stay at 0)
        assert (state[name].abs().max() > 0) == (biases == "all") or name.endswith("b_K"), name
    model = run.load_model()
    assert {n for n, _ in model.named_parameters()} & set(names) == (set(names) if biases == "all" else set())
    if importlib.util.find_spec("transformer_lens") is None:
        return
    hooked = grokscope.to_hooked_transformer(run)
    tokens = run.task().tokens
    theirs = _logits(hooked, tokens)
    torch.testing.assert_close(_logits(model, tokens), theirs, atol=1e-5, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), theirs[:, -1], atol=1e-5, rtol=0)
    for name in names:  # TransformerLens has no bias knob: it holds what grokscope trained, zeros for "none"
        assert torch.equal(hooked.state_dict()[name], state[name]), name
    back = from_hooked_transformer(hooked, cfg)
    assert {n for n, _ in back.named_parameters()} == {n for n, _ in model.named_parameters()}
    torch.testing.assert_close(_logits(back, tokens), theirs, atol=1e-5, rtol=0)
