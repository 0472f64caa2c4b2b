"""``grokscope sweep``: expand a sweep spec into runs and run them (locally or on Ray), resumably."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grokscope.cli_args import add_device_arg

EPILOG = """examples:
  grokscope sweep --list
  grokscope sweep --preset wd-fraction --out sweeps/wdf            # 72 runs, local processes
  grokscope sweep examples/sweeps/wd_fraction.json --out sweeps/wdf --dry-run
  grokscope sweep spec.json --out sweeps/x --executor ray --address auto
  grokscope sweep spec.json --out sweeps/x --device cuda              # one worker per visible GPU, ensembles of 64
  grokscope sweep spec.json --out sweeps/x --executor ray --address auto --device cuda   # one GPU per Ray job
  grokscope sweep sweeps/wdf                                        # continue a sweep from its sweep.json
  grokscope report sweeps/wdf                                       # phase diagrams -> sweeps/wdf/report.html
re-running the same command skips finished cells and resumes interrupted ones.
--device sets the cells' train.device. It says how cells run, not what they are: cell names and finished cells do
not depend on it, so a sweep continues on another machine (interrupted cells resume on the new device). On CUDA the
local executor runs one worker per visible GPU (each sees only its own); Ray asks for one GPU per job. --dry-run
plans for the local executor on this machine."""


def register(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="run a sweep (grid of configs) and index its phases",
        description="Expand a sweep spec (JSON, YAML, a Python function file.py:func, or --preset) into runs with "
        "stable names, run them in parallel (packing compatible cells into ensembles), and index every cell's "
        "outcome (epochs to thresholds, Liu et al. phase, final values) in DIR/index.sqlite.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("spec", nargs="?",
                   help="sweep spec file (.json/.yaml/.py[:func]) or an existing sweep directory to continue")
    p.add_argument("--preset", help="a preset sweep instead of a spec file (see --list)")
    p.add_argument("--out", type=Path, help="sweep directory (created, or continued when it holds this sweep)")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local processes (default) or a Ray cluster")
    p.add_argument("--address",
                   help="Ray cluster address (e.g. auto, ray://host:10001); default: start a local Ray instance")
    p.add_argument("--workers", type=int,
                   help="parallel jobs (default: the usable CPU cores, or one per visible GPU on CUDA; "
                   "0 = run in this process)")
    p.add_argument("--threads", type=int, help="torch threads per job (default 1: the cells are the parallelism)")
    add_device_arg(p)
    p.add_argument("--no-ensemble", action="store_true", help="never pack cells into batched ensembles")
    p.add_argument("--ensemble-size", type=int, metavar="K",
                   help="largest ensemble (default 16 on the CPU, 64 on a GPU; on a GPU also bounded by an estimate "
                   "of its memory)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a base-config field, e.g. --set train.epochs=500 (repeatable)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the cells, their state and the planned jobs; run nothing")
    p.add_argument("--list", action="store_true", help="list the preset sweeps")
    p.add_argument("--show", action="store_true", help="print the spec (a preset's or a file's) as JSON and exit")
    p.add_argument("--csv", type=Path, help="after the sweep, also export the index to this CSV file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    from grokscope.cli_args import UserError
    from grokscope.sweep.layout import SweepDir, is_sweep_dir
    from grokscope.sweep.presets import describe_sweep_presets, get_sweep_preset
    from grokscope.sweep.spec_files import load_spec

    if args.list:
        rows = describe_sweep_presets()
        w = max(len(r[0]) for r in rows)
        for name, doc, avail in rows:
            print(f"{name:<{w}}  {doc} [{avail}]")
        print("\nrun one: grokscope sweep --preset NAME --out DIR; show its spec: grokscope sweep --preset NAME --show")
        return 0

    out = args.out
    if args.preset and args.spec:
        raise UserError("give a spec file or --preset NAME, not both")
    if args.preset:
        spec = get_sweep_preset(args.preset)
    elif args.spec:
        if is_sweep_dir(args.spec):
            if out is not None and Path(out).resolve() != Path(args.spec).resolve():
                raise UserError(
                    f"{args.spec} is a sweep directory; continue it with 'grokscope sweep {args.spec}' (no --out)")
            out = Path(args.spec)
            spec = SweepDir(out).read_spec()
        else:
            spec = load_spec(args.spec)
    else:
        raise UserError("give a sweep spec file, a sweep directory or --preset NAME (see 'grokscope sweep --list')")
    if args.overrides:
        spec = _with_overrides(spec, args.overrides)

    if args.show:
        print(json.dumps(spec.to_dict(), indent=2))
        return 0
    if out is None:
        raise UserError("give --out DIR (the sweep directory)")
    if args.ensemble_size is not None and args.ensemble_size < 1:
        raise UserError(f"--ensemble-size: must be >= 1, got {args.ensemble_size}")
    if args.executor != "ray" and args.address:
        raise UserError("--address is for --executor ray")
    if args.workers is not None and args.workers < 0:
        raise UserError(f"--workers: must be >= 0, got {args.workers}")

    if args.dry_run:
        from grokscope.sweep.local import plan_sweep

        plan = plan_sweep(spec, out, workers=args.workers, ensemble=not args.no_ensemble,
                          max_ensemble=args.ensemble_size, device=args.device)
        print(plan.describe())
        print(plan.table())
        return 0

    from grokscope.sweep.local import run_sweep, summarize

    try:
        result = run_sweep(spec, out, executor=args.executor, workers=args.workers, threads=args.threads,
                           address=args.address, ensemble=not args.no_ensemble, max_ensemble=args.ensemble_size,
                           device=args.device, progress=False if args.quiet else None)
    except KeyboardInterrupt:
        print(f"\ngrokscope sweep: interrupted; run the same command again to finish the sweep ({out})",
              file=sys.stderr)
        return 130
    print(f"sweep:      {result.dir}")
    print(f"time:       {result.seconds:.1f} s ({result.ran} cells run, {result.skipped} already done)")
    print(summarize(result.frame, spec))
    if args.csv:
        result.frame.to_csv(args.csv, index=False)
        print(f"csv:        {args.csv}")
    print(f"report:     grokscope report {result.dir}")
    if result.errors:
        print(f"grokscope sweep: {len(result.errors)} cells failed (see {result.dir}/index.sqlite, column error); "
              "re-run to retry them", file=sys.stderr)
        return 1
    return 0


def _with_overrides(spec, overrides: list[str]):
    from grokscope.config import parse_override
    from grokscope.sweep.spec import spec_from_dict

    data = spec.to_dict()
    data["set"] = dict(parse_override(s) for s in overrides)
    return spec_from_dict(data)
