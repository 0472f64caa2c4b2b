"""The analysis of a run (analysis.json and phases.json, written through the run store API), the end-of-run
summary of ``grokscope run``, and the analysis of a model or safetensors checkpoint grokscope did not train.

``device``: where the model's forward passes run (``grokscope analyze --device``). The model and the task's
tensors are placed there; the float64 math stays float64. On the CPU (the default) nothing moves: the numbers
are those of a plain CPU analysis, bit for bit; on another device they are close, not equal (other kernels). The
Section 4 analysis itself (:func:`~grokscope.analysis.reverse.analyze_checkpoint`, ``analyze_in_basis``) reads a
model on a device through a CPU copy, as the progress measures do, so its numbers are the CPU's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from grokscope.analysis.basis import analyze_in_basis
from grokscope.analysis.logits import analyze_logits
from grokscope.analysis.reverse import Analysis
from grokscope.analysis.tables import render_logit_analysis, render_summary
from grokscope.analysis.zoo import render_zoo, zoo_analysis
from grokscope.config import ExperimentConfig
from grokscope.interop import from_hooked_transformer
from grokscope.measures import MeasureError, check_task, detect_phases, fixed_key_measures, names
from grokscope.measures.bases import is_identity, task_basis
from grokscope.measures.grid import on_cpu
from grokscope.models import Model, Transformer, is_own_model
from grokscope.runtime import flush_denormal
from grokscope.store import DamagedFileError, RunError, load_tensors
from grokscope.store.split import apply_split
from grokscope.tasks import make_task, task_to
from grokscope.training.user_model import class_name, user_forward

__all__ = ["ANALYSIS_FILE", "PHASES_FILE", "analyze_model", "analyze_run", "file_step", "load_state_and_step",
           "load_state_file", "model_analysis", "print_run_summary", "print_zoo"]

ANALYSIS_FILE = "analysis.json"
PHASES_FILE = "phases.json"
#: File suffixes of pickle checkpoints (torch.save); grokscope never unpickles.
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")
CONVERT_HINT = 'convert it once in Python: safetensors.torch.save_file(model.state_dict(), "model.safetensors")'


def _task_on(task: Any, device: torch.device | None) -> Any:
    """``task`` with its tensors on ``device``; the task itself on the CPU or ``None`` (nothing copied)."""
    return task if device is None or device.type == "cpu" else task_to(task, device)


def _model_on(model: Any, device: torch.device | None) -> Any:
    return model if device is None or device.type == "cpu" else model.to(device)


def _in_group(task: Any, basis: str | None) -> bool:
    """Whether a task is analysed in a group basis other than the plain additive one (MeasureError for a basis it
    cannot take)."""
    if task.config.kind != "modular":
        return False
    chosen, _ = task_basis(task, basis)
    return chosen is not None and not is_identity(chosen, task.p)


def analyze_run(run: Any, *, step: int | None = None, key_freqs: list[int] | None = None, rule: str = "W_L_dft",
                all_steps: bool = False, write: bool = True, device: torch.device | None = None,
                basis: str | None = None, model: nn.Module | None = None) -> tuple[Analysis | None, dict[str, Any]]:
    """Analyse one checkpoint of an opened run; returns (Analysis, the analysis.json dict).

    ``run`` follows the store API (``config``, ``task()``, ``checkpoints``, ``load_model(step)``, ``metrics``,
    ``dir``, ``write_json``, ``write_metrics``). Raises the store's RunError (one line) for a run without
    checkpoints or a missing step. The zoo analyses that fit the task go under ``"zoo"``
    (:func:`grokscope.analysis.zoo.zoo_analysis`); for a task the Fourier analysis does not cover (not a full
    modular grid: division, other kinds) they are the whole analysis and Analysis is None. ``device``: where the
    forward passes run (default: the CPU; see the module docstring). ``basis``: ``"additive"`` or ``"dlog"`` instead
    of the task's own group basis (:func:`grokscope.analysis.analyze_in_basis`). ``model``: for a run of your own
    module (``train(model=...)``), a module of its class to load the checkpoint into. A model that is not one of
    grokscope's (your module, a registered one) gets the logit-level analysis
    (:func:`grokscope.analysis.logits.analyze_logits`) and Analysis is None.
    """
    where = getattr(run, "dir", "run")
    task = _task_on(run.task(), device)
    try:
        grouped = _in_group(task, basis)
        if not grouped:
            check_task(task)
        unsupported = None
    except MeasureError as e:
        grouped, unsupported = False, str(e)
    steps = list(run.checkpoints)
    if not steps:
        raise RunError(f"{where}: the run has no checkpoints to analyse")
    if step is None:
        step = steps[-1]
    elif step not in steps:
        near = min(steps, key=lambda s: abs(s - step))
        raise RunError(f"{where}: no checkpoint at step {step} (nearest: {near})")
    model = _model_on(run.load_model(step) if model is None else run.load_model(step, model=model), device)
    if not is_own_model(model):
        data, all_steps = _logits_only(model, task, step, unsupported, all_steps, basis), False
        analysis = None
    elif unsupported is not None:
        analysis, data, all_steps = None, _zoo_only(model, task, step, unsupported, all_steps), False
    else:
        try:
            analysis = analyze_in_basis(model, task, basis=basis, key_freqs=key_freqs, rule=rule, step=step)
        except MeasureError as e:
            raise RunError(f"{where}: {e}") from None
        data = analysis.to_dict()
        data["zoo"] = zoo_analysis(model, task, scores=False)  # spectra in both bases, operand asymmetry, when they fit
    data["run"] = str(where)
    data["checkpoints"] = steps

    if all_steps:
        assert analysis is not None  # all_steps is False for an unsupported task
        with flush_denormal(run.config.train.flush_denormal):  # as in training: no subnormal slow path
            loaders = [(s, lambda s=s: _model_on(run.load_model(s), device)) for s in steps]
            # the fixed-key second pass in the analysis's basis (same detection, same Z_n frequencies)
            fixed = fixed_key_measures(loaders, task, key_freqs=analysis.key_frequencies, basis=basis)
        if write:
            for s, row in fixed.iterrows():
                run.write_metrics(int(s), {k: float(v) for k, v in row.items() if v == v})
        data["fixed_key_measures"] = {"key_frequencies": fixed.attrs["key_frequencies"], "steps": len(fixed)}
    try:
        metrics = run.metrics
    except DamagedFileError:
        raise
    except Exception:  # a run without a metrics database still gets analysed; a damaged one is reported
        metrics = None
    if metrics is not None and len(metrics):
        if all_steps and names.fixed(names.EXCLUDED_LOSS) not in metrics.columns:
            metrics = metrics.join(fixed, how="outer")
        phases = detect_phases(metrics).to_dict()
        data["phases"] = phases
        if write:
            run.write_json(PHASES_FILE, phases)
    else:
        data["phases"] = None
    if write:
        run.write_json(ANALYSIS_FILE, data)
    return analysis, data


def _logits_only(model: nn.Module, task: Any, step: int, unsupported: str | None, all_steps: bool,
                 basis: str | None) -> dict[str, Any]:
    """analysis.json of a model grokscope cannot read by weight names: the logit-level analysis, or why not."""
    why = (f"the model is {class_name(model)}, not one of grokscope's; the weight-level analysis reads grokscope's "
           "models (a HookedTransformer converts with grokscope.from_hooked_transformer, then analyze_model)")
    skipped = {"--all-steps": "it recomputes the progress measures, which read weights"} if all_steps else {}
    if unsupported is not None:
        return {"level": "none", "step": step, "task": task.config.kind,
                "skipped": {"logit analysis": unsupported, **skipped}}
    model, task, _ = on_cpu(model, task)  # a model on a device: read through a CPU copy (float64, as the analysis)
    data = analyze_logits(user_forward(model, task).fn, task, basis=basis, step=step, why=why)
    data["skipped"].update(skipped)
    return data


def _zoo_only(model: Model, task: Any, step: int, reason: str, all_steps: bool) -> dict[str, Any]:
    """analysis.json of a task outside the Fourier analysis: what :func:`zoo_analysis` fits, and why the rest is not
    there. Division: the progress measures and fits live on the additive p x p grid, which a/b does not fill; they
    are not recomputed in the discrete-log basis (no published definition there); the W_E spectra in both bases
    stand in."""
    cfg = task.config
    zoo = zoo_analysis(model, task)
    if "spectra" in zoo:
        reason += "; the W_E spectra in the additive and discrete-log bases are reported instead"
    zoo["skipped"] = {"Fourier analysis and progress measures": reason}
    if all_steps:
        zoo["skipped"]["--all-steps"] = "it recomputes the progress measures, which do not apply"
    formula = cfg.formula if cfg.kind in ("modular", "multi", "s5") else None
    return {"step": step, "task": cfg.kind, "formula": formula, "zoo": zoo}


def print_zoo(data: dict[str, Any]) -> None:
    """Print the zoo tables of an analysis.json dict, if it has any (a model known by its logits: its logit-level
    analysis, or what was skipped and why)."""
    if data.get("level") == "logits":
        print(render_logit_analysis(data))
        return
    if data.get("level") == "none":
        print("\n".join(f"skipped: {what}: {why}" for what, why in data["skipped"].items()))
        return
    text = render_zoo(data.get("zoo") or {})
    if text:
        print(text)


def print_run_summary(run: Any, *, all_steps: bool = True, device: torch.device | None = None) -> None:
    """End-of-run summary for ``grokscope run``: the second pass with key frequencies fixed from the final
    checkpoint (``all_steps``), analysis.json/phases.json, then grok epoch, phases, key frequencies, restricted
    vs test loss and the Table 5 row. A task outside the Fourier analysis prints the zoo analyses that fit it; an
    error prints one line. ``device``: where the forward passes run (default: the CPU)."""
    try:
        analysis, data = analyze_run(run, all_steps=all_steps, device=device)
    except (ValueError, RunError) as e:
        print(f"analysis:   skipped ({e})")
        return
    if analysis is None:
        print_zoo(data)
    else:
        print(render_summary(analysis, data.get("phases")))
    print(f"analysis:   {Path(run.dir) / ANALYSIS_FILE} (full tables: grokscope analyze {run.dir})")


# --------------------------------------------------------------------------- a model grokscope did not train


def model_analysis(model_or_state_dict: Any, config: ExperimentConfig, *, key_freqs: list[int] | None = None,
                   rule: str = "W_L_dft", step: int | None = None,
                   where: str | None = None, device: torch.device | None = None,
                   basis: str | None = None, split: Sequence[int] | None = None,
                   split_where: str = "split") -> tuple[nn.Module, Analysis | None, dict[str, Any]]:
    """(grokscope model, Analysis, analysis dict): what :func:`analyze_run` gives a run, for one model.

    The dict has ``run`` None, ``checkpoints`` [], ``phases`` None, and the ``zoo`` block of a run (spectra in both
    bases where they fit). ``step``: the model's training step, or None when unknown (``"step": null``, never a
    made-up 0). ``split``: the model's own train indices ``a * p + b`` (:func:`grokscope.store.split.apply_split`;
    RunError, one line naming ``split_where``, for bad ones) instead of ``config.task``'s split, so train and test
    losses are the model's. ``where``: the model's name in error messages.
    A task outside the Fourier analysis gets the zoo analyses that fit it, as a run does, and Analysis is None.
    ``device``: where the forward passes run (the model is moved there; default: the CPU)."""
    task = make_task(config.task)
    if split is not None:
        task = apply_split(task, split, split_where)
    try:
        if not _in_group(task, basis):
            check_task(task)
        unsupported = None
    except MeasureError as e:  # as analyze_run: the zoo analyses that fit, and why the rest does not
        unsupported = str(e)
    model = model_or_state_dict
    if not isinstance(model, Transformer):
        model = from_hooked_transformer(model_or_state_dict, config, where=where)
    model, task = _model_on(model, device), _task_on(task, device)
    model.eval()
    analysis: Analysis | None
    if unsupported is not None:
        analysis, data = None, _zoo_only(model, task, 0, unsupported, False)
        data["step"] = step
    else:
        analysis = analyze_in_basis(model, task, basis=basis, key_freqs=key_freqs, rule=rule, step=step)
        data = analysis.to_dict()
        data["zoo"] = zoo_analysis(model, task, scores=False)  # as analyze_run: spectra in both bases, asymmetry
    data.update(run=None, checkpoints=[], phases=None)
    return model, analysis, data


def analyze_model(model_or_state_dict: Any, config: ExperimentConfig, *, key_freqs: list[int] | None = None,
                  rule: str = "W_L_dft", device: torch.device | None = None,
                  basis: str | None = None, step: int | None = None,
                  split: Sequence[int] | None = None) -> dict[str, Any]:
    """The analysis dict of ``grokscope analyze`` (the analysis.json schema) for a model grokscope did not train.

    ``model_or_state_dict``: a grokscope model, a ``HookedTransformer`` or a TransformerLens state dict
    (see :func:`grokscope.interop.from_hooked_transformer`). Train/test numbers use ``split`` (the model's train
    indices ``a * p + b``) when given, else the split of ``config.task``. ``step``: the model's step, or None
    (unknown). ``run`` and ``phases`` are None (no run, no training curves). Raises ConfigError, MeasureError
    (ValueErrors) or RunError (a bad split). ``device``: where the forward passes run (default: the CPU).
    """
    return model_analysis(model_or_state_dict, config, key_freqs=key_freqs, rule=rule, device=device, basis=basis,
                          step=step, split=split)[2]


def load_state_file(path: Path) -> dict[str, Any]:
    """The tensors of a safetensors file (never pickle); RunError (one line) for a missing, pickle or damaged file."""
    return load_state_and_step(path)[0]


def load_state_and_step(path: Path) -> tuple[dict[str, Any], int | None]:
    """(the tensors of a safetensors file, its training step or None): :func:`load_state_file` and
    :func:`file_step`."""
    path = Path(path)
    if path.is_dir():
        raise RunError(f"{path}: a directory; --checkpoint takes a .safetensors file "
                       "(analyse a run with 'grokscope analyze RUN')")
    if not path.is_file():
        raise RunError(f"{path}: no such file")
    pickle = f"{path}: a pickle checkpoint (torch.save), which grokscope never loads; {CONVERT_HINT}"
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise RunError(pickle)
    try:
        tensors, metadata = load_tensors(path)
    except OSError as e:
        raise RunError(f"{path}: cannot read ({e.strerror or e})") from None
    except ValueError as e:
        with path.open("rb") as f:
            head = f.read(4)
        if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":  # torch.save's zip archive or a bare pickle
            raise RunError(pickle) from None
        raise RunError(f"{e}; --checkpoint takes a safetensors file ({CONVERT_HINT})") from None
    return tensors, file_step(path, metadata)


_STEP_IN_NAME = re.compile(r"(?:^|[^a-z0-9])step[_-]?(\d+)(?![0-9])", re.IGNORECASE)


def file_step(path: Path, metadata: dict[str, str] | None = None) -> int | None:
    """The training step of a checkpoint file: its safetensors metadata field ``step`` (grokscope's checkpoints
    write it), else a ``step_<N>`` (or ``step-N``, ``stepN``) in the file name, else None (unknown). RunError (one
    line) for a ``step`` field that is not a non-negative integer."""
    raw = (metadata or {}).get("step")
    if raw is not None:
        text = str(raw).strip()
        if not text.isdigit():
            raise RunError(f"{path}: the metadata field step is {raw!r}, not a non-negative integer")
        return int(text)
    found = _STEP_IN_NAME.findall(Path(path).stem)
    return int(found[-1]) if len(found) == 1 else None
