"""``grokscope patch|probe|sae RUN ...``: the interpretability instruments on a run's checkpoints.

The only module of :mod:`grokscope.interp` that touches files: it loads checkpoints through the run store,
prints tables and writes ``interp_patch.json``, ``interp_probe.json`` and ``interp_sae.json`` into the run
(read by :mod:`grokscope.figures.interp` for the report). ``--device`` places the model and the task's tensors
(default: the CPU, where the numbers are those of a plain CPU run, bit for bit; elsewhere close, not equal; MPS, which
has no float64, falls back to the CPU with a note).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["PATCH_FILE", "PROBE_FILE", "SAE_FILE", "register"]

PATCH_FILE = "interp_patch.json"
PROBE_FILE = "interp_probe.json"
SAE_FILE = "interp_sae.json"


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "patch",
        help="activation and attribution patching of a checkpoint (heads, neurons, positions, frequency clusters)",
        description="Activation patching on a checkpoint: clean inputs (a, b) and corrupted inputs with one operand "
        "replaced by a random residue (different answer); patch activations from the clean run into the corrupted "
        "one and report the recovered fraction of the logit difference (clean answer minus corrupted answer), for "
        "every attention head x position, every MLP neuron, every residual-stream position, and each key-frequency "
        "neuron cluster against random clusters of equal size. Attribution patching (one forward and backward pass) "
        "estimates the same tables; their correlation and the speed-up are reported. Writes interp_patch.json.",
    )
    _common(p)
    p.add_argument("--n", type=int, default=256, help="number of clean/corrupted input pairs (default 256)")
    p.add_argument("--operand", choices=("a", "b"), default="a", help="operand to corrupt (default a)")
    p.add_argument("--split", choices=("all", "train", "test"), default="all",
                   help="rows to draw clean inputs from (default all)")
    p.add_argument("--sweeps", default="heads,neurons,neurons_pre,positions",
                   help="comma-separated sweeps: heads, neurons, neurons_pre, positions (default all four)")
    p.add_argument("--direction", choices=("denoise", "noise"), default="denoise",
                   help="denoise: patch clean into corrupted (default); noise: corrupted into clean")
    p.add_argument("--random-clusters", type=int, default=100, metavar="N",
                   help="random neuron sets per cluster (default 100)")
    p.add_argument("--top", type=int, default=10, help="neurons to list (default 10)")
    p.set_defaults(func=cmd_patch)

    p = subparsers.add_parser(
        "probe",
        help="linear probes for cos/sin(w_k a), (w_k b), (w_k (a+b)) and the answer, over checkpoints",
        description="Fit closed-form ridge probes from an activation (default: the last MLP's neurons at '=') to "
        "cos/sin of each key frequency times a, b and a+b (and the answer c for other formulas), and to the "
        "one-hot answer; report held-out R^2 (half of all p^2 inputs held out) per frequency, at one checkpoint "
        "or over many (a progress measure). Writes interp_probe.json.",
    )
    _common(p)
    p.add_argument("--steps", default=None,
                   help="checkpoints to probe: 'all', 'every:N' (every N-th checkpoint), or comma-separated steps "
                   "(default: only --step / the last)")
    p.add_argument("--hook",
                   help="activation to probe (default: the last MLP's hook_post), e.g. blocks.0.hook_resid_mid")
    p.add_argument("--position", type=int, default=-1, help="position to read (default -1, the '=' token)")
    p.add_argument("--extra-freqs", default="", help="comma-separated non-key frequencies to probe as controls")
    p.set_defaults(func=cmd_probe)

    p = subparsers.add_parser(
        "sae",
        help="train a sparse autoencoder on a checkpoint's MLP activations and relate its features to frequencies",
        description="Train a sparse autoencoder (top-k or L1) on the last MLP's activations at '=' over all p^2 "
        "inputs; report reconstruction (MSE, fraction of variance unexplained), sparsity (L0), dead features, "
        "features aligned with one key frequency (input side: >= 85% of a feature's variance over (a, b) in the "
        "frequency's harmonic family; output side: its decoder's logit effect), and test accuracy with the "
        "reconstruction spliced in. With --compare, also trains at other checkpoints and matches decoder "
        "directions. Writes interp_sae.json.",
    )
    _common(p)
    p.add_argument("--kind", choices=("topk", "l1"), default="topk", help="sparsity mechanism (default topk)")
    p.add_argument("--features", type=int, default=64, help="dictionary size (default 64)")
    p.add_argument("--k", type=int, default=16, help="active features per input for topk (default 16)")
    p.add_argument("--l1", type=float, default=3e-2, help="L1 coefficient for kind l1 (default 0.03)")
    p.add_argument("--train-steps", type=int, default=6000, help="Adam steps (default 6000)")
    p.add_argument("--lr", type=float, default=3e-3, help="learning rate (default 3e-3)")
    p.add_argument("--seed", type=int, default=0, help="SAE initialisation and batch seed (default 0)")
    p.add_argument("--compare", default="", help="comma-separated other checkpoint steps to train SAEs on and compare")
    p.set_defaults(func=cmd_sae)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="run directory")
    p.add_argument("--step", type=int, help="checkpoint step (default: the last)")
    p.add_argument("--key-freqs", help="comma-separated key frequencies (default: the W_L_dft rule on the checkpoint)")
    p.add_argument("--seed-data", type=int, default=0, dest="data_seed",
                   help="seed for input sampling and probe splits (default 0)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--device", metavar="NAME",
                   help="where the model's forward passes run: auto (CUDA, then MPS, then the CPU), cpu, cuda, cuda:N "
                   "or mps (default: cpu; on a GPU the numbers are close to the CPU's, not equal; mps computes on "
                   "the CPU, since it has no float64)")
    p.add_argument("--no-write", action="store_true", help="print only; do not write the JSON file into the run")


def _ints(text: str, flag: str) -> list[int]:
    from grokscope.cli_args import UserError

    try:
        return sorted({int(x) for x in text.replace(" ", "").split(",") if x})
    except ValueError:
        raise UserError(f"{flag}: expected comma-separated integers, got {text!r}") from None


def _load(run, step: int | None, device):
    """Checkpoint ``step``'s model on ``device`` (on the CPU: as the store loads it)."""
    model = run.load_model(step)
    return model if device.type == "cpu" else model.to(device)


def _open(args: argparse.Namespace):
    """(run, task, step, model, key frequencies) with one-line errors; the model and the task on ``args.device``."""
    import torch

    from grokscope.cli_args import UserError, device_from_args
    from grokscope.measures import MeasureError, check_task, key_frequencies
    from grokscope.store import load_run
    from grokscope.tasks import task_to

    torch.set_num_threads(max(1, args.threads))
    args.device = device_from_args(argparse.Namespace(device=getattr(args, "device", None) or "cpu"))
    if args.device.type == "mps":  # the tables, probes and SAE analysis are float64, which MPS does not have
        print("note: MPS has no float64, which the patching tables, probes and SAE analysis use: computing on the CPU",
              file=sys.stderr)
        args.device = torch.device("cpu")
    run = load_run(args.run)
    task = run.task()
    try:
        check_task(task)
    except MeasureError as e:
        raise UserError(f"{run.dir}: {e}") from None
    task = task if args.device.type == "cpu" else task_to(task, args.device)
    model = _load(run, args.step, args.device)
    step = args.step if args.step is not None else run.checkpoints[-1]
    if not hasattr(model, "run_with_cache"):
        raise UserError(f"{run.dir}: the {type(model).__name__} model has no hooks to patch or probe")
    if args.key_freqs:
        keys = _ints(args.key_freqs, "--key-freqs")
        bad = [k for k in keys if not 1 <= k <= (task.p - 1) // 2]
        if bad:
            raise UserError(f"--key-freqs: frequencies must be in 1..{(task.p - 1) // 2}, got {bad}")
    else:
        keys = key_frequencies(model, task)
        if not keys:
            raise UserError(f"{run.dir}: no clear key frequencies at step {step} (the model may not have grokked); "
                            "pass --key-freqs")
    return run, task, step, model, keys


def _write(run, args, name: str, data: dict) -> None:
    if not args.no_write:
        print(f"wrote {run.write_json(name, data)}")


# ----------------------------------------------------------------------------- patch


def cmd_patch(args: argparse.Namespace) -> int:
    from grokscope.cli_args import UserError
    from grokscope.interp.attribution import attribution_patching, compare_with_activation_patching
    from grokscope.interp.patch_sweeps import SWEEPS, cluster_patching
    from grokscope.interp.patching import make_corruption

    run, task, step, model, keys = _open(args)
    sweeps = [s for s in args.sweeps.replace(" ", "").split(",") if s]
    bad = [s for s in sweeps if s not in SWEEPS]
    if bad:
        raise UserError(f"--sweeps: unknown {bad}; known: {', '.join(SWEEPS)}")
    if not hasattr(model, "blocks"):
        sweeps = [s for s in sweeps if s != "heads"]
    if args.n < 1:
        raise UserError("--n must be >= 1")
    setup = make_corruption(task, args.n, operand=args.operand, seed=args.data_seed, split=args.split)
    print(f"{run.dir} step {step}: {setup.description}; key frequencies {keys}")
    attr = attribution_patching(model, setup, direction=args.direction)
    comps = compare_with_activation_patching(model, setup, sweeps, direction=args.direction, attr=attr)
    print(f"mean logit difference: clean {attr.clean_logit_diff:.3f}, corrupted {attr.corrupt_logit_diff:.3f}")
    data: dict[str, Any] = {"run": str(run.dir), "step": step, "key_frequencies": keys, "setup": setup.to_dict(),
                            "attribution": attr.to_dict(), "sweeps": {}}
    for c in comps:
        data["sweeps"][c.kind] = c.to_dict()
        if c.kind in ("heads", "positions"):
            print(f"\nactivation patching, recovered fraction ({c.kind}, {c.hook}):")
            print(c.activation.table())
        elif c.kind == "neurons":
            vals = c.activation.values.reshape(-1)
            order = vals.abs().argsort(descending=True)[: args.top].tolist()
            print(f"\ntop {len(order)} neurons by |recovered| (activation patching; attribution estimate):")
            est = c.attribution.values.reshape(-1)
            for i in order:
                print(f"  neuron {i:>4}: {float(vals[i]):+.4f}  ({float(est[i]):+.4f})")
    print("\nattribution patching vs activation patching:")
    for c in comps:
        print("  " + c.summary())
    if hasattr(model, "blocks") or hasattr(model, "mlp"):
        clusters = cluster_patching(model, task, setup, keys, n_random=args.random_clusters, seed=args.data_seed,
                                    direction=args.direction)
        data["clusters"] = clusters.to_dict()
        print("\n" + clusters.table())
    _write(run, args, PATCH_FILE, data)
    return 0


# ----------------------------------------------------------------------------- probe


def _steps(run, text: str | None, default: int) -> list[int]:
    from grokscope.cli_args import UserError

    steps = run.checkpoints
    if text is None:
        return [default]
    if text == "all":
        return steps
    if text.startswith("every:"):
        try:
            n = int(text.split(":", 1)[1])
        except ValueError:
            raise UserError(f"--steps: expected every:N, got {text!r}") from None
        if n < 1:
            raise UserError("--steps every:N needs N >= 1")
        chosen = steps[::n]
        return chosen if chosen[-1] == steps[-1] else chosen + [steps[-1]]
    chosen = _ints(text, "--steps")
    missing = [s for s in chosen if s not in steps]
    if missing:
        raise UserError(f"--steps: no checkpoint at {missing} (see 'grokscope show {run.dir}')")
    return chosen


def cmd_probe(args: argparse.Namespace) -> int:
    from grokscope.cli_args import UserError
    from grokscope.interp.probes import ProbeSeries, probe_model

    run, task, step, model, keys = _open(args)
    steps = _steps(run, args.steps, step)
    extra = _ints(args.extra_freqs, "--extra-freqs") if args.extra_freqs else []
    reports = []
    t0 = time.perf_counter()
    for s in steps:
        m = model if s == step else _load(run, s, args.device)
        try:
            reports.append(probe_model(m, task, keys, hook=args.hook, position=args.position, extra_freqs=extra,
                                       seed=args.data_seed, step=s))
        except (ValueError, IndexError) as e:
            raise UserError(f"--hook/--position: {e}") from None
    series = ProbeSeries(reports)
    print(f"{run.dir}: probes of {reports[-1].hook} (position {args.position}) at {len(steps)} checkpoint(s), "
          f"key frequencies {keys}, {time.perf_counter() - t0:.1f} s")
    if len(reports) > 1:
        print(series.table("a+b"))
        print()
    print(f"step {reports[-1].step}:")
    print(reports[-1].table())
    _write(run, args, PROBE_FILE, {"run": str(run.dir), "key_frequencies": keys, **series.to_dict()})
    return 0


# ----------------------------------------------------------------------------- sae


def cmd_sae(args: argparse.Namespace) -> int:
    from grokscope.cli_args import UserError
    from grokscope.interp.sae import SAEConfig, compare_saes, sae_on_checkpoint

    run, task, step, model, keys = _open(args)
    try:
        cfg = SAEConfig(n_features=args.features, kind=args.kind, k=args.k, l1=args.l1, steps=args.train_steps,
                        lr=args.lr, seed=args.seed)
    except ValueError as e:
        raise UserError(str(e)) from None
    others = _steps(run, args.compare, step) if args.compare else []
    results = []
    for s in [step] + [o for o in others if o != step]:
        m = model if s == step else _load(run, s, args.device)
        sae, rep = sae_on_checkpoint(m, task, keys, cfg, step=s)
        print(rep.summary())
        results.append((sae, rep))
    data: dict[str, Any] = {"run": str(run.dir), "key_frequencies": keys, "reports": [r.to_dict() for _, r in results],
                            "comparisons": []}
    for sae, rep in results[1:]:
        c = compare_saes(results[0][0], sae, results[0][1], rep)
        data["comparisons"].append(c.to_dict())
        print(f"step {c.step_a} vs {c.step_b}: mean best |cos| of decoder directions {c.mean_max_cosine:.3f}; "
              f"{c.matched} of {c.n_live_a} live features matched at |cos| >= {c.threshold} ({c.same_frequency} "
              "with the same frequency)")
    _write(run, args, SAE_FILE, data)
    return 0
