"""TransformerLens interop: grokscope checkpoints as ``HookedTransformer`` models, and back.

grokscope's :class:`~grokscope.models.Transformer` has TransformerLens's names, shapes and state-dict keys
(``normalization_type=None``, learned positions, causal attention scaled by 1/sqrt(d_head)), so a
conversion is a checked state-dict copy. Which biases train is the config's ``model.biases`` (TransformerLens has
no such knob): by default the attention and unembedding biases (``b_Q, b_K, b_V, b_O, b_U``) are buffers, zero for
models grokscope trains; "all" trains them as TransformerLens does. Every bias is loaded as it is, a parameter or a
buffer by the layout, and every forward of grokscope (the plain one and the fast path) adds it;
:func:`biases_layout` names the layout that holds a TransformerLens model as it is.

TransformerLens is imported only where a ``HookedTransformer`` or its config is built (extra ``tl``):
:func:`from_hooked_transformer` on a state dict works without it. The analysis of such a model is
:func:`grokscope.analysis.run.analyze_model`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from grokscope.config import ConfigError, ExperimentConfig
from grokscope.models import build_model
from grokscope.store import Run
from grokscope.tasks import make_task

__all__ = ["TL_INSTALL_HINT", "biases_layout", "from_hooked_transformer", "hooked_transformer_config",
           "to_hooked_transformer"]

TL_INSTALL_HINT = 'pip install "grokscope[tl]"'

#: Bias buffers of grokscope's transformer; a state dict may leave them out (read as zero).
BIAS_BUFFERS = ("b_Q", "b_K", "b_V", "b_O", "b_U")
#: TransformerLens buffers that are not weights (the causal mask, the -inf fill value, and a rotary model's sin and
#: cos tables, ``blocks.L.attn.rotary_sin/cos`` [n_ctx, rotary_dim]: functions of the config); ignored both ways.
TL_BUFFERS = ("IGNORE", "mask", "rotary_sin", "rotary_cos")
#: ``HookedTransformerConfig`` fields that change the function without changing any state-dict key or shape.
_SEMANTIC_FIELDS = ("act_fn", "normalization_type", "positional_embedding_type", "attn_only", "use_attn_scale",
                    "attn_scale", "parallel_attn_mlp", "gated_mlp", "attention_dir", "attn_scores_soft_cap",
                    "output_logits_soft_cap", "n_key_value_heads", "use_local_attn", "n_ctx", "rotary_dim",
                    "rotary_base", "rotary_adjacent_pairs")
# Dimension names of each tensor (TransformerLens layout), for shape-mismatch messages.
_DIMS = {
    "embed.W_E": ("d_vocab", "d_model"), "pos_embed.W_pos": ("n_ctx", "d_model"),
    "W_Q": ("n_heads", "d_model", "d_head"), "W_K": ("n_heads", "d_model", "d_head"),
    "W_V": ("n_heads", "d_model", "d_head"), "W_O": ("n_heads", "d_head", "d_model"),
    "b_Q": ("n_heads", "d_head"), "b_K": ("n_heads", "d_head"), "b_V": ("n_heads", "d_head"), "b_O": ("d_model",),
    "W_in": ("d_model", "d_mlp"), "b_in": ("d_mlp",), "W_out": ("d_mlp", "d_model"), "b_out": ("d_model",),
    "unembed.W_U": ("d_model", "d_vocab_out"), "unembed.b_U": ("d_vocab_out",), "w": ("d_model",), "b": ("d_model",),
}


def biases_layout(model_or_state_dict: Any) -> str:
    """The ``model.biases`` layout that holds a TransformerLens model (a module or a state dict) as it is: "all" when
    an attention or unembedding bias (``b_Q, b_K, b_V, b_O, b_U``) is nonzero or, in a module, is a parameter that
    requires grad (TransformerLens trains them unless they are frozen, so a fresh ``HookedTransformer`` is "all");
    "none" when every bias, ``b_in`` and ``b_out`` too, is zero and none is a parameter that requires grad; "mlp"
    otherwise. A grokscope model gets its own layout back."""
    if isinstance(model_or_state_dict, nn.Module):
        trains = {n for n, p in model_or_state_dict.named_parameters() if p.requires_grad}
        state: Mapping[str, Any] = model_or_state_dict.state_dict()
    else:
        trains, state = set(), model_or_state_dict
    biases = [n for n in state if n.rsplit(".", 1)[-1] in (*BIAS_BUFFERS, "b_in", "b_out")]
    used = {n for n in biases if n in trains or bool(torch.as_tensor(state[n]).any())}
    if any(n.rsplit(".", 1)[-1] in BIAS_BUFFERS for n in used):
        return "all"
    return "mlp" if used else "none"


def _transformer_lens() -> Any:
    """The ``transformer_lens`` module, or an ImportError naming the extra."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import transformer_lens
    except ImportError as e:
        if getattr(e, "name", None) == "transformer_lens":
            raise ImportError(f"TransformerLens is not installed; install the extra: {TL_INSTALL_HINT}") from None
        raise ImportError(f"TransformerLens failed to import ({e}); reinstall it: {TL_INSTALL_HINT}") from None
    return transformer_lens


def _check_representable(config: ExperimentConfig) -> None:
    m = config.model
    if m.arch != "transformer":
        raise ConfigError(f"model.arch: a HookedTransformer represents arch='transformer' only, got {m.arch!r}")
    if m.act_fn == "quadratic":
        raise ConfigError(f"model.act_fn: TransformerLens has no {m.act_fn!r} activation "
                          "(grokscope's relu, gelu, gelu_new, silu and solu map to its own)")
    if m.output_scale != 1.0:
        raise ConfigError(f"model.output_scale: a HookedTransformer has no output scale (this model's logits are "
                          f"multiplied by {m.output_scale}); only runs with output_scale 1 can be exported")


def _task_shape(config: ExperimentConfig) -> tuple[int, int, int]:
    """(d_vocab, d_vocab_out, n_ctx) of the config's task (``d_vocab_out``: the model's when it sets one)."""
    task = make_task(config.task)
    return task.d_vocab, getattr(config.model, "d_vocab_out", None) or task.d_vocab_out, task.n_ctx


def hooked_transformer_config(config: ExperimentConfig, **overrides: Any) -> Any:
    """The ``HookedTransformerConfig`` of the model ``config`` describes (float32 on the CPU unless overridden).

    ``overrides`` go to ``HookedTransformerConfig`` (e.g. ``dtype=torch.float64``, ``seed=0``,
    ``init_weights=False``). Raises :class:`ConfigError` for architectures TransformerLens cannot represent (the
    MLP models, the quadratic activation). Dropout has no TransformerLens counterpart and is left out (eval mode
    is equal).
    """
    _check_representable(config)
    tl = _transformer_lens()
    m = config.model
    d_vocab, d_vocab_out, n_ctx = _task_shape(config)
    kwargs: dict[str, Any] = {
        "n_layers": m.n_layers, "d_model": m.d_model, "d_head": m.d_head, "n_heads": m.n_heads, "d_mlp": m.d_mlp,
        "d_vocab": d_vocab, "d_vocab_out": d_vocab_out, "n_ctx": n_ctx, "act_fn": m.act_fn,
        "normalization_type": m.normalization_type, "attn_only": m.attn_only,
        "use_attn_scale": m.use_attn_scale, "parallel_attn_mlp": m.parallel_attn_mlp,
        "positional_embedding_type": m.positional_embedding_type,
        "device": "cpu", "dtype": torch.float32,
    }
    if m.positional_embedding_type == "rotary":  # TransformerLens's default pairing (GPT-NeoX halves) is ours
        kwargs.update(rotary_dim=m.rotary_dim or m.d_head, rotary_base=m.rotary_base)
    kwargs.update(overrides)
    return tl.HookedTransformerConfig(**kwargs)


def hooked_from_state_dict(config: ExperimentConfig, state: Mapping[str, Tensor], **overrides: Any) -> Any:
    """A ``HookedTransformer`` (eval mode) with the weights of a grokscope-keyed ``state`` (checked against
    ``config``); ``overrides`` go to :func:`hooked_transformer_config` (``dtype``, ``device``, ...)."""
    tl = _transformer_lens()
    _check_representable(config)
    dtype = overrides.get("dtype", torch.float32)
    full = _checked_state(state, _blank_model(config).to(dtype), "state dict")
    cfg = hooked_transformer_config(config, init_weights=False, **overrides)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TransformerLens 3 deprecates HookedTransformer in favour of its bridge
        model = tl.HookedTransformer(cfg)
    missing, unexpected = model.load_state_dict(full, strict=False)
    missing = [k for k in missing if k.rsplit(".", 1)[-1] not in TL_BUFFERS]
    if missing or unexpected:  # a TransformerLens version with other keys
        raise ConfigError(f"TransformerLens's state-dict keys differ from grokscope's (missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]})")
    return model.eval()


def to_hooked_transformer(run: Any, step: int | None = None, *, dtype: torch.dtype = torch.float32,
                          device: str = "cpu") -> Any:
    """A TransformerLens ``HookedTransformer`` with the weights of checkpoint ``step`` (default: the last), eval mode.

    ``run`` is a :class:`~grokscope.store.Run` or a run directory. Needs the extra ``tl``.
    """
    run = run if isinstance(run, Run) else Run(Path(run))
    return hooked_from_state_dict(run.config, run.load_state_dict(step), dtype=dtype, device=device)


def _blank_model(config: ExperimentConfig) -> nn.Module:
    d_vocab, d_vocab_out, n_ctx = _task_shape(config)
    return build_model(config.model, d_vocab=d_vocab, d_vocab_out=d_vocab_out, n_ctx=n_ctx)


def _dims(name: str) -> tuple[str, ...] | None:
    return _DIMS.get(name) or _DIMS.get(name.rsplit(".", 1)[-1])


def _checked_state(state: Mapping[str, Any], model: nn.Module, where: str) -> dict[str, Tensor]:
    """``state`` as a complete state dict of ``model`` (same keys, dtypes); a mismatch raises ConfigError (one line)."""
    expected = model.state_dict()
    out: dict[str, Tensor] = {}
    missing = []
    for name, ref in expected.items():
        got = state.get(name)
        if got is None:
            if name.rsplit(".", 1)[-1] in BIAS_BUFFERS:
                out[name] = torch.zeros_like(ref)
            else:
                missing.append(f"{name} {list(ref.shape)}")
            continue
        if not isinstance(got, Tensor) or not got.is_floating_point():
            got_type = getattr(got, "dtype", type(got).__name__)
            raise ConfigError(f"{where}: {name} must be a floating-point tensor, got {got_type}")
        if tuple(got.shape) != tuple(ref.shape):
            dims = _dims(name)
            named = f" = [{', '.join(dims)}]" if dims else ""
            raise ConfigError(f"{where}: {name} has shape {list(got.shape)}, the config expects {list(ref.shape)}"
                              f"{named}; make the config describe this model (on the command line: "
                              "--set model.KEY=VALUE)")
        if not bool(torch.isfinite(got).all()):
            raise ConfigError(f"{where}: {name} holds NaN or infinite values")
        out[name] = got.detach().to(device=ref.device, dtype=ref.dtype).clone()
    if missing:
        raise ConfigError(f"{where}: missing {len(missing)} key(s) the config's model needs: "
                          f"{', '.join(missing[:4])}" + (" ..." if len(missing) > 4 else ""))
    extra = [k for k in state if k not in expected and k.rsplit(".", 1)[-1] not in TL_BUFFERS]
    if extra:
        raise ConfigError(f"{where}: {len(extra)} key(s) the config's model does not have: {', '.join(extra[:4])}"
                          + (" ..." if len(extra) > 4 else "") + _extra_hint(extra, model))
    return out


def _extra_hint(extra: list[str], model: nn.Module) -> str:
    if any(k.startswith("pos_embed.") for k in extra):
        return " (learned positions: set model.positional_embedding_type to the source's, 'standard' or 'shortformer')"
    if any(".ln" in k or k.startswith("ln_final") for k in extra):
        return " (LayerNorm/RMSNorm weights: set model.normalization_type to the source's, e.g. 'LN')"
    n_layers = len(getattr(model, "blocks", ()))
    if any(k.startswith(f"blocks.{n_layers}.") for k in extra):
        return f" (more layers than model.n_layers={n_layers})"
    if any(".mlp." in k for k in extra):
        return " (MLP weights: the config is attention-only, set model.attn_only=false)"
    return ""


def _check_hooked_cfg(tl_cfg: Any, config: ExperimentConfig) -> None:
    """Compare a HookedTransformer's config with the one grokscope would build, on the fields keys do not show."""
    want = hooked_transformer_config(config, init_weights=False)
    for name in _SEMANTIC_FIELDS:
        if not hasattr(want, name):  # a field this TransformerLens version does not have
            continue
        a, b = getattr(tl_cfg, name, None), getattr(want, name)
        same = math.isclose(a, b, rel_tol=1e-9) if isinstance(a, float) and isinstance(b, float) else a == b
        if not same:
            raise ConfigError(f"HookedTransformer cfg.{name} is {a!r}, "
                              f"grokscope's transformer for this config has {b!r}")


def from_hooked_transformer(model_or_state_dict: Any, config: ExperimentConfig, *, dtype: torch.dtype = torch.float32,
                            where: str | None = None) -> nn.Module:
    """A grokscope :class:`~grokscope.models.Transformer` (eval mode) with the weights of a TransformerLens model.

    ``model_or_state_dict``: a ``HookedTransformer`` (its config is checked too: activation, normalisation,
    positions, attention scale) or a state dict (mapping name -> tensor) with TransformerLens keys.
    ``config`` gives the architecture and task. Keys and shapes must match it; TransformerLens's ``mask`` and
    ``IGNORE`` buffers are ignored; absent ``b_Q, b_K, b_V, b_O, b_U`` are zero and present ones are kept
    (nonzero when TransformerLens trained them), as parameters or buffers by ``config.model.biases``
    (:func:`biases_layout` names the layout that trains what the source trains). A mismatch raises
    :class:`ConfigError` naming the key and both shapes (and ``where``, the source, when given). Works without
    TransformerLens for a state dict.
    """
    _check_representable(config)
    if isinstance(model_or_state_dict, nn.Module):
        tl_cfg = getattr(model_or_state_dict, "cfg", None)
        if tl_cfg is not None and not isinstance(tl_cfg, type(config.model)):
            _check_hooked_cfg(tl_cfg, config)
        state: Mapping[str, Any] = model_or_state_dict.state_dict()
        where = where or type(model_or_state_dict).__name__
    elif isinstance(model_or_state_dict, Mapping):
        state, where = model_or_state_dict, where or "state dict"
    else:
        raise TypeError(f"expected a HookedTransformer or a state dict, got {type(model_or_state_dict).__name__}")
    model = _blank_model(config).to(dtype)
    model.load_state_dict(_checked_state(state, model, where), strict=True)
    return model.eval()
