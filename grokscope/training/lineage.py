"""A run that starts from another run's weights: ``grokscope train --from RUN[:STEP]`` (continue the parent with a
changed config) and ``--init-from RUN[:STEP] --init-parts ...`` (copy some parts into a new model, e.g. of another
operation). Here: reading the parent at a saved step, choosing its parts, checking that they fit, the new run's
initial resume state and the parent record ``meta["parent"]`` (docs/cli.md, "Starting from another run").

The new run is an ordinary run whose resume state is written before its first epoch: the loop loads it as it
loads any resume point, so the new run resumes like any other and its epochs count from 0 (epoch 0 is the parent's
weights at STEP; ``meta["parent"]["step"]`` lines its epochs up with the parent's). The parent is only read.

What comes along with ``--from``: every tensor of the model; AdamW's moments, the update rules' state and the update
counter (so no second warm-up) when STEP is the parent's resume point (its last saved state, normally its final
epoch) and the optimiser differs at most in ``lr``, ``weight_decay``, ``warmup_steps``, ``betas`` and ``eps``;
otherwise the optimiser starts fresh (zero moments, update 0, warm-up again). ``--init-from``: the named parts only,
the optimiser always fresh. ``freeze`` (either way): those parameters get no gradient, so no update and no weight
decay.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor, nn

from grokscope.config import ExperimentConfig, flat_dict
from grokscope.models import build_model
from grokscope.store.files import atomic_write_json, load_tensors, save_tensors
from grokscope.store.metrics import MetricsDB
from grokscope.store.run import METRICS, STATE, Run, RunError, check_run
from grokscope.tasks import make_task
from grokscope.training.recorder import MODEL, OPTIM, RULES

__all__ = ["PARENT_FILE", "PARENT_META", "PARTS", "Parent", "StartState", "freeze", "frozen_names", "parse_parts",
           "parse_source", "part_keys", "prepare_start", "read_parent", "write_start"]

#: The meta key of a run started from another run: JSON with run, step, mode, parts, optimizer, update, frozen.
PARENT_META = "parent"
#: The same record as a file of the run directory.
PARENT_FILE = "parent.json"

#: The parts of a model by TransformerLens name: a state-dict key belongs to a part when the pattern matches.
PARTS: dict[str, str] = {
    "embed": r"^(embed|pos_embed)\.",  # W_E and W_pos
    "attn": r"(^|\.)attn\.",  # W_Q, W_K, W_V, W_O (and their zero bias buffers)
    "mlp": r"(^|\.)mlp\.",  # W_in, b_in, W_out, b_out
    "unembed": r"^unembed\.",  # W_U (and the zero b_U buffer)
    "ln": r"(^|\.)ln(1|2|_final)\.",  # LayerNorm / RMSNorm weights, when the model has them
}

#: Optimiser fields that may change while AdamW's moments still come along.
_HYPERPARAMETERS = {"optim.lr", "optim.weight_decay", "optim.warmup_steps", "optim.betas", "optim.eps"}


@dataclass(frozen=True, kw_only=True)
class Parent:
    """Where a new run starts: ``run`` (a run directory) at checkpoint ``step`` (None: its last). ``parts``: None
    continues the whole run (``--from``: every tensor, and the optimiser when it can); names from :data:`PARTS` (or
    ``("all",)``) copy those parts into the new config's freshly initialised model (``--init-from``). ``freeze``:
    parts whose parameters do not train in the new run."""

    run: Path | str
    step: int | None = None
    parts: tuple[str, ...] | None = None
    freeze: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for field, names in (("parts", self.parts or ()), ("freeze", self.freeze)):
            unknown = [n for n in names if n not in PARTS and n != "all"]
            if unknown:
                raise RunError(f"{field}: unknown part {unknown[0]!r}; the parts are {', '.join(PARTS)} or all")
        if self.parts is not None and not self.parts:
            raise RunError("parts: name at least one part (embed, attn, mlp, unembed, ln or all)")


@dataclass(frozen=True)
class StartState:
    """The new run's first resume state: ``tensors`` (``model.*``, maybe ``optim.*`` and ``rules.*``), the update
    counter it stands at, and the parent record for its meta."""

    tensors: dict[str, Tensor]
    update: int
    record: dict


def parse_source(text: str) -> tuple[Path, int | None]:
    """``RUN[:STEP]`` as (run directory, step or None). A ``:`` followed by digits at the end names the step."""
    head, sep, tail = text.rpartition(":")
    if sep and head and tail.isdigit():
        return Path(head), int(tail)
    return Path(text), None


def parse_parts(text: str, what: str) -> tuple[str, ...]:
    """Comma-separated part names (``embed,attn``, ``all``) as a tuple; RunError naming ``what`` for an unknown one."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in PARTS and n != "all"]
    if unknown or not names:
        bad = f"unknown part {unknown[0]!r}" if unknown else "no part named"
        raise RunError(f"{what} {text}: {bad}; the parts are {', '.join(PARTS)} (comma-separated) or all")
    return names


def part_keys(keys: Iterable[str], parts: Sequence[str]) -> list[str]:
    """The keys (of a state dict) in any of ``parts`` (names of :data:`PARTS`; ``all``: every key), in order."""
    keys = list(keys)
    if "all" in parts:
        return keys
    patterns = [re.compile(PARTS[p]) for p in parts]
    return [k for k in keys if any(p.search(k) for p in patterns)]


def _checkpoint_step(run: Run, step: int | None) -> int:
    steps = run.checkpoints
    if not steps:
        raise RunError(f"{run.dir}: the run has no checkpoints to start from")
    if step is None:
        return steps[-1]
    if step not in steps:
        near = sorted(sorted(steps, key=lambda s: (abs(s - step), s))[:2])
        raise RunError(f"{run.dir}: no checkpoint at step {step}; the nearest saved steps are "
                       f"{' and '.join(map(str, near))} ({len(steps)} checkpoints, {steps[0]} to {steps[-1]})")
    return step


def _fresh_model(config: ExperimentConfig) -> nn.Module:
    task = make_task(config.task)
    return build_model(config.model, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=task.n_ctx)


def _changed(parent: ExperimentConfig, config: ExperimentConfig, prefixes: tuple[str, ...]) -> list[str]:
    old, new = flat_dict(parent.to_dict()), flat_dict(config.to_dict())
    return [k for k in new if k.startswith(prefixes) and old.get(k) != new[k]]


def prepare_start(config: ExperimentConfig, parent: Parent) -> StartState:
    """Read ``parent`` and build the first resume state of a run of ``config``. RunError (one line) for a missing or
    damaged parent, a step that is not a saved checkpoint, a run of a user module, shapes that do not fit (naming
    the changed field for ``--from``, the first mismatched tensor for ``--init-from``) or a part the model lacks."""
    run = Run(parent.run)
    check_run(run.dir)
    if run.user_module or run.config.model.arch == "registered" or config.model.arch == "registered":
        raise RunError(f"{run.dir}: --from/--init-from take runs of grokscope's own models (this one trains "
                       "your own module)")
    step = _checkpoint_step(run, parent.step)
    weights = run.load_state_dict(step)
    model = _fresh_model(config)
    fresh = model.state_dict()
    continuing = parent.parts is None
    if continuing and run.config.model.biases != config.model.biases:
        raise RunError(f"model.biases: {run.config.model.biases!r} -> {config.model.biases!r} changes which weights "
                       "train; --from continues the same model: use --init-from RUN --init-parts all to start the "
                       "new layout from its weights")
    keys = list(fresh) if continuing else part_keys(fresh, parent.parts or ())
    if not continuing:  # a bias the new layout holds as a zero buffer stays zero (model.biases)
        trained = {n for n, _ in model.named_parameters()}
        keys = [k for k in keys if k in trained or not k.rsplit(".", 1)[-1].startswith("b_")]
    if not keys:
        raise RunError(f"--init-parts {','.join(parent.parts or ())}: the new model has no such weights "
                       f"(its tensors: {', '.join(fresh)})")
    for key in keys:
        have, want = weights.get(key), fresh[key]
        if have is not None and have.shape == want.shape:
            continue
        where = f"{run.dir} at step {step}"
        what = f"missing in {where}" if have is None else \
            f"{list(have.shape)} in {where}, {list(want.shape)} in the new config"
        if continuing:
            fields = _changed(run.config, config, ("model.", "task."))
            named = ", ".join(fields) if fields else "the model's shape"
            raise RunError(f"{named}: changes the parameter shapes ({key}: {what}); "
                           "--from continues the same model: use --init-from RUN --init-parts ... to start another "
                           "model from some of its weights")
        raise RunError(f"--init-from: {key} does not fit ({what}); choose parts whose shapes match "
                       "(--init-parts)")
    tensors = {f"{MODEL}{k}": (weights[k] if k in keys else v).clone() for k, v in fresh.items()}
    update, optimizer = 0, "fresh"
    if continuing:
        moments, update = _parent_optimiser(run, step, config)
        if moments:
            tensors |= moments
            optimizer = "continued"
    frozen = part_keys((n for n, _ in model.named_parameters()), parent.freeze) if parent.freeze else []
    record = {"run": str(run.dir.resolve()), "step": step, "mode": "from" if continuing else "init",
              "parts": ["all"] if continuing else list(parent.parts or ()), "tensors": len(keys),
              "optimizer": optimizer, "update": update, "freeze": list(parent.freeze), "frozen": frozen,
              "parent_name": run.config.name}
    return StartState(tensors, update, record)


def _parent_optimiser(run: Run, step: int, config: ExperimentConfig) -> tuple[dict[str, Tensor], int]:
    """The parent's AdamW moments and update rules' state with its update counter, when they can continue (``step``
    is its resume point and the optimiser differs at most in its hyperparameters); else ({}, 0)."""
    path = run.dir / STATE
    if not path.is_file() or set(_changed(run.config, config, ("optim.",))) - _HYPERPARAMETERS:
        return {}, 0
    try:
        tensors, meta = load_tensors(path)
    except ValueError:
        return {}, 0  # damaged: the weights come from the checkpoint, the optimiser starts fresh
    if int(meta.get("epoch", -1)) != step:
        return {}, 0
    return {k: v.clone() for k, v in tensors.items() if k.startswith((OPTIM, RULES))}, int(meta["update"])


def write_start(run_dir: Path, start: StartState) -> None:
    """Write the new run's first resume state (epoch 0) and its parent record: ``meta["parent"]`` and the same JSON
    in ``parent.json`` (read by the loop without opening the metrics database)."""
    atomic_write_json(Path(run_dir) / PARENT_FILE, start.record)
    db = MetricsDB(Path(run_dir) / METRICS)
    try:
        db.set_meta({PARENT_META: json.dumps(start.record)})
    finally:
        db.close()
    save_tensors(Path(run_dir) / STATE, start.tensors,
                 metadata={"epoch": "0", "update": str(start.update), "grok_epoch": "None"})


def read_parent(run_dir: Path | str) -> dict | None:
    """The parent record of a run started with ``--from``/``--init-from`` (None for other runs); RunError (one line)
    when its ``parent.json`` is unreadable."""
    path = Path(run_dir) / PARENT_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RunError(f"{path}: unreadable parent record ({e}); restore it from meta['parent'] "
                       "('grokscope show --json RUN')") from None
    if not isinstance(record, dict):
        raise RunError(f"{path}: the parent record is not a JSON object")
    return record


def frozen_names(run_dir: Path | str) -> list[str]:
    """The parameters a run keeps frozen (its parent record's ``frozen``; none for other runs)."""
    record = read_parent(run_dir)
    return list(record.get("frozen", [])) if record else []


def freeze(model: nn.Module, names: Iterable[str]) -> None:
    """Stop the gradient of the named parameters: AdamW then neither updates nor decays them."""
    wanted = set(names)
    for name, param in model.named_parameters():
        if name in wanted:
            param.requires_grad_(False)

