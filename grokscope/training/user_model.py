"""Your own model: any ``nn.Module`` mapping tokens [batch, n_ctx] to logits, trained by the ordinary loop.

The module's output shape is read once, on two rows of the task: [batch, d_vocab_out] (logits at the last
position) or [batch, n_ctx, d_vocab_out] (logits at every position; the last one is scored, or every answer position
of a sequence task). The run records which in its meta (``model_class``, ``logits_at``, ``measures``); checkpoints
are the module's own state dict, so ``resume(path, model=...)`` and ``Run.load_model(model=...)`` take a module of
the same class. The progress measures read TransformerLens names (``W_E``, ``W_U``, ``blocks[0].mlp``) and
apply whole where the module exposes them; otherwise the run logs those that read logits only (restricted and
excluded loss, :func:`grokscope.measures.progress.logit_measures`), and the meta says which.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from grokscope.models.forward import ForwardChoice
from grokscope.store.errors import RunError
from grokscope.store.run import Run
from grokscope.tasks import is_sequence_task

__all__ = ["MODEL_CLASS", "TL_NAMES", "check_user_model", "class_name", "exposes_tl_names", "user_forward", "user_meta"]

MODEL_CLASS = "model_class"  # the meta key naming a user module's class; absent for grokscope's own models
TL_NAMES = ("W_E", "W_U", "blocks")


def class_name(model: nn.Module) -> str:
    """``module.QualName`` of the module's class."""
    return f"{type(model).__module__}.{type(model).__qualname__}"


def exposes_tl_names(model: nn.Module) -> bool:
    """True when the module has the TransformerLens names the progress measures read."""
    return all(hasattr(model, n) for n in TL_NAMES)


def user_forward(model: nn.Module, task) -> ForwardChoice:
    """The forward of a user module on ``task``, its output shape detected once on two rows.
    Returns ``fn``: tokens [N, n_ctx] -> logits [N, d_vocab_out] (a sequence task: [N, n_ctx, d_vocab_out])."""
    x = task.tokens[:2]  # [2, n_ctx]
    n, t = x.shape
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as e:  # the user's forward: one line naming the module and the input it got
        raise RunError(f"model: {class_name(model)} failed on tokens of shape [batch, {t}] "
                       f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    finally:
        model.train(was)
    c = task.d_vocab_out
    name = class_name(model)
    if not isinstance(out, Tensor):
        raise RunError(f"model: {name} returned {type(out).__name__}, not a tensor of logits")
    shape = list(out.shape)
    if is_sequence_task(task):
        if shape != [n, t, c]:
            raise RunError(f"model: {name} returned logits {shape}; this task is scored at every position, so it must "
                           f"return [batch, n_ctx, d_vocab_out] = [{n}, {t}, {c}]")
        return ForwardChoice(fn=model, path="user", why=f"{name}: logits at every position (the task scores several)")
    if shape == [n, c]:
        return ForwardChoice(fn=model, path="user", why=f"{name}: logits at the last position ([batch, {c}])")
    if shape == [n, t, c]:
        def last(tokens: Tensor) -> Tensor:
            return model(tokens)[:, -1]  # [batch, d_vocab_out]

        return ForwardChoice(fn=last, path="user", why=f"{name}: logits at every position; the last one is scored")
    raise RunError(f"model: {name} returned logits {shape} on tokens [{n}, {t}]; expected [batch, d_vocab_out] = "
                   f"[{n}, {c}] or [batch, n_ctx, d_vocab_out] = [{n}, {t}, {c}]")


def user_meta(model: nn.Module, choice: ForwardChoice, measures: str) -> dict[str, str]:
    """The meta a run of a user module records: its class, where its logits are, which measures ran (``measures``:
    "all", "logits" or "none")."""
    at = "every position" if "every position" in choice.why else "last position"
    names = ", ".join(TL_NAMES)
    note = {"all": "applied: the module exposes TransformerLens names",
            "logits": "logit measures only: restricted and excluded loss, with key frequencies from the logits' "
                      f"spectrum (the weight measures need TransformerLens names: {names})",
            "none": "skipped: the progress measures need a modular task (and train.measure_every > 0)"}[measures]
    return {MODEL_CLASS: class_name(model), "logits_at": at, "measures": note}


def check_user_model(run: Run, model: nn.Module | None) -> None:
    """One line (RunError) when ``model`` does not suit the run: a run of a user module needs a module of its class,
    a run of grokscope's own model takes none."""
    if run.config.model.arch == "registered":
        if model is not None:
            raise RunError(f"{run.dir}: the run trained the registered model {run.config.model.name!r}, which resume "
                           f"builds again from the registry; resume it without model= (got {class_name(model)})")
        return
    trained = run.user_module
    if trained is None and model is not None:
        raise RunError(f"{run.dir}: the run trained grokscope's own model (config.json's model); resume it without "
                       f"model= (got {class_name(model)})")
    if trained is not None and model is None:
        raise RunError(f"{run.dir}: the run trained your module {trained}; resume it with model=<a new {trained}>")
    if model is not None and trained is not None and trained != class_name(model) \
            and not trained.endswith("." + type(model).__qualname__):  # __main__.X in a script, mod.X imported
        raise RunError(f"{run.dir}: the run trained {trained}, not {class_name(model)}; pass a module of that class")
