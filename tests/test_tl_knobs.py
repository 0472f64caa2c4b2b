"""TransformerLens architecture knobs (issue 22 item 1): a grokscope transformer with each combination in a grid
loads into a ``HookedTransformer`` with identical logits, and a HookedTransformer loads back into grokscope."""

import dataclasses
import itertools
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
    model = dataclasses.replace(base.model, normalization_type=norm, n_layers=n_layers, act_fn=act,
                                attn_only=attn_only, init_seed=3)
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
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, use_attn_scale=scale,
                                                             parallel_attn_mlp=parallel))
    model, task = _perturbed(cfg)
    hooked = hooked_from_state_dict(cfg, model.state_dict())
    assert (hooked.cfg.use_attn_scale, hooked.cfg.parallel_attn_mlp) == (scale, parallel)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = hooked(task.tokens)
        torch.testing.assert_close(model.forward_all(task.tokens), theirs, atol=1e-5, rtol=0)
        torch.testing.assert_close(model(task.tokens), theirs[:, -1], atol=1e-5, rtol=0)
        torch.testing.assert_close(from_hooked_transformer(hooked, cfg).forward_all(task.tokens), theirs,
                                   atol=1e-5, rtol=0)
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
