"""grokscope.interp on any device (issue 20): patching, attribution, cluster sweeps, probes and SAEs create every
tensor on the device of the tensors they combine with, and draw their seeded randomness on the CPU (then move it), so
a GPU run sees the same inputs, splits, SAE start and batches as a CPU run.

Two checks. On the CPU, the interp modules' ``torch`` is replaced by the strict proxy of tests/device_proxy.py (a
factory call without ``device=`` raises) and every instrument must give exactly the results it gives without it. On
CUDA (the ``DEVICES`` fixture; skipped where absent), the model and the task are moved there and the results, of the
functions and of ``grokscope patch|probe|sae --device``, must equal the CPU's: the CPU-drawn inputs exactly, the
numbers to tolerances calibrated on the CPU (a 2e-6 relative perturbation of the weights, a few times the rounding
that separates two devices, stays within them), threshold decisions where both runs decided alike. MPS has no float64,
which the tables use: the commands compute on the CPU there, with a note.
"""

import json
import math

import pytest
import torch
from device_proxy import StrictTorch, strict

from grokscope.analysis.construct import quadratic_mlp_addition
from grokscope.config import ModelConfig, TaskConfig
from grokscope.interp import attribution, patch_sweeps, patching, probes, sae
from grokscope.measures import post_hook_name
from grokscope.models import build_model
from grokscope.tasks import make_task, task_to

MODULES = (patching, patch_sweeps, attribution, probes, sae)
#: Wall-time fields: the only parts of the outputs that differ between two identical runs.
TIMES = {"seconds", "train_seconds", "speedup", "activation_seconds", "attribution_seconds"}
KEYS = [2, 5]


def _transformer(seed=3):
    cfg = ModelConfig(arch="transformer", d_model=16, n_heads=2, d_head=8, d_mlp=32, init_seed=seed)
    return build_model(cfg, d_vocab=14, d_vocab_out=13, n_ctx=3).eval()


def _task():
    return make_task(TaskConfig(p=13, train_fraction=0.3))


def _untimed(value):
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if k not in TIMES}
    if isinstance(value, list):
        return [_untimed(v) for v in value]
    return value


def _patching(model, task):
    setup = patching.make_corruption(task, 40, seed=1)
    kinds = ("heads", "neurons", "positions") if hasattr(model, "blocks") else ("neurons",)
    comparisons = attribution.compare_with_activation_patching(model, setup, kinds)
    one = patching.patch_activation(model, setup, post_hook_name(model), units=[0, 3], direction="noise")
    clusters = patch_sweeps.cluster_patching(model, task, setup, KEYS, n_random=4, seed=2, threshold=0.0)
    return {
        "setup": [setup.clean_tokens.tolist(), setup.corrupt_tokens.tolist(), setup.corrupt_answers.tolist()],
        "comparisons": [c.to_dict() for c in comparisons],
        "one": one.to_dict(),
        "clusters": clusters.to_dict(),
    }


def _probes(model, task):
    report = probes.probe_model(model, task, KEYS, extra_freqs=[3], seed=4)
    fit = probes.fit_ridge(torch.randn(30, 4, generator=torch.Generator().manual_seed(0)), torch.arange(30.0), seed=1)
    return {"report": report.to_dict(), "fit": [fit.W.tolist(), fit.alpha]}


def _saes(model, task):
    out = {}
    for kind in ("topk", "l1"):
        a, rep_a = sae.sae_on_checkpoint(model, task, KEYS, sae.SAEConfig(n_features=8, kind=kind, k=3, steps=30))
        cfg_b = sae.SAEConfig(n_features=8, kind=kind, k=3, steps=30, seed=1)
        b, rep_b = sae.sae_on_checkpoint(model, task, KEYS, cfg_b)
        out[kind] = [rep_a.to_dict(), rep_b.to_dict(), sae.compare_saes(a, b, rep_a, rep_b, threshold=0.5).to_dict()]
    return out


INSTRUMENTS = {"patching": _patching, "probes": _probes, "sae": _saes}
MODELS = {"transformer": _transformer, "mlp": lambda: quadratic_mlp_addition(13, [2, 5])}


def test_the_shared_proxy_checks_randperm_too():
    with pytest.raises(AssertionError, match="torch.randperm called without device="):
        StrictTorch().randperm(3)


@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize("instrument", sorted(INSTRUMENTS))
def test_the_instruments_create_no_tensor_without_the_inputs_device(monkeypatch, instrument, model_name):
    run, make = INSTRUMENTS[instrument], MODELS[model_name]
    plain = json.dumps(_untimed(run(make(), _task())), sort_keys=True)
    strict(monkeypatch, MODULES)
    assert json.dumps(_untimed(run(make(), _task())), sort_keys=True) == plain  # the same bits, every device explicit


def _close(a, b, path="", atol=1e-4, skip=()):
    """Assert two JSON-like values equal, floats to ``atol`` (relative to their size), except the leaves whose path
    ends with one of ``skip`` (their presence only); report the first mismatch."""
    if path.endswith(tuple(skip)):
        return
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}", atol, skip)
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]", atol, skip)
    elif isinstance(a, float) and isinstance(b, float):
        assert (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=atol, abs_tol=atol), (path, a, b)
    else:
        assert a == b, (path, a, b)


def test_close_compares_to_the_tolerance_and_skips_only_what_it_is_told():
    _close({"x": [1.0, 2.0], "n": 3}, {"x": [1.0, 2.00001], "n": 3})
    with pytest.raises(AssertionError, match="x"):
        _close({"x": [1.0, 2.0]}, {"x": [1.0, 2.01]})
    with pytest.raises(AssertionError, match="n"):
        _close({"n": 3}, {"n": 4})
    _close(
        {"acc": {"mean-ablated": 0.1, "original": 1.0}},
        {"acc": {"mean-ablated": 0.3, "original": 1.0}},
        skip=("mean-ablated",),
    )


@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize("instrument", sorted(INSTRUMENTS))
def test_a_device_run_equals_the_cpu_run(device, instrument, model_name):
    if device == "mps":
        pytest.skip(
            "MPS has no float64, which the instruments' tables use: grokscope patch|probe|sae compute on the CPU"
        )
    run, make = INSTRUMENTS[instrument], MODELS[model_name]
    cpu = _untimed(run(make(), _task()))
    here = _untimed(run(make().to(device), task_to(_task(), device)))
    # Seeded draws are the CPU's on every device: the same inputs and splits; the numbers agree to float32 rounding
    # (an SAE's 30 Adam steps compound it, hence the looser tolerance there). Calibrated on the CPU: a 2e-6 relative
    # perturbation of these models' weights stays within both tolerances, except the constructed MLP's mean-ablated
    # accuracy: with every neuron at its mean its logits are equal up to rounding, and the argmax is a tie-break.
    _close(here, cpu, instrument, atol=1e-3 if instrument == "sae" else 1e-4, skip=("accuracy.mean-ablated",))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from grokscope.config import apply_overrides
    from grokscope.presets import tiny
    from grokscope.training import train

    cfg = apply_overrides(tiny(), {"train.epochs": 40, "train.checkpoint_every": 20})
    return train(cfg, tmp_path_factory.mktemp("interpdevice") / "run", progress=False).dir


COMMANDS = {
    "patch": (["--n", "24", "--random-clusters", "3"], "interp_patch.json"),
    "probe": (["--steps", "all", "--extra-freqs", "3"], "interp_probe.json"),
    "sae": (["--features", "8", "--k", "2", "--train-steps", "20", "--compare", "20"], "interp_sae.json"),
}


def _command(run_dir, name, device=None):
    from grokscope.cli import main

    flags, out = COMMANDS[name]
    assert main([name, str(run_dir), "--key-freqs", "1,2", *flags] + (["--device", device] if device else [])) == 0
    return _untimed(json.loads((run_dir / out).read_text()))


def _skeleton(value):
    """``value`` with every number replaced by its type: the layout of a JSON output."""
    if isinstance(value, dict):
        return {k: _skeleton(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_skeleton(v) for v in value]
    return type(value).__name__ if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def _flat(value):
    return [x for v in value for x in _flat(v)] if isinstance(value, list) else [value]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_commands_on_a_device_equal_the_cpu(run_dir, device, name):
    """The JSON of ``--device D`` against the CPU's: the same layout, the same inputs (drawn on the CPU), and the
    continuous numbers to float32 rounding. A trained run's checkpoints also hold decisions near a threshold, which
    rounding can tip (measured on the CPU with a 2e-6 relative perturbation of the weights): a neuron's membership of
    a frequency cluster (the 85% rule) and a probe's penalty (chosen among near-equal validation scores); those are
    compared only where both runs decided alike."""
    cpu = _command(run_dir, name)
    _check_command(name, _command(run_dir, name, device), cpu)


def _check_command(name, here, cpu):
    assert _skeleton(here) == _skeleton(cpu)
    if name == "patch":
        assert here["setup"] == cpu["setup"] and here["key_frequencies"] == cpu["key_frequencies"]
        _close(here["attribution"], cpu["attribution"], "attribution")
        for kind, sweep in cpu["sweeps"].items():
            for method in ("activation", "attribution"):
                got, want = here["sweeps"][kind][method], sweep[method]
                _close(_flat(got["values"]), _flat(want["values"]), f"{kind} {method}", atol=1e-3)
        for got, want in zip(here["clusters"]["rows"], cpu["clusters"]["rows"]):
            if got["size"] == want["size"]:  # (a fraction of comparisons with the random sets: a decision each)
                _close(got, want, f"cluster {want['frequency']}", atol=1e-3, skip=("random_beaten",))
    elif name == "probe":
        compared = 0
        for got, want in zip(here["reports"], cpu["reports"]):
            keys = ("step", "hook", "position", "key_frequencies", "n_fit", "n_eval")
            assert [got[k] for k in keys] == [want[k] for k in keys]
            for target, r2 in want["r2"].items():
                # a probe that beats the mean (R^2 > 0) with the same penalty: 0.05 (the activations of these
                # barely trained checkpoints are near-singular and the smallest penalty wins, so the fit reads
                # directions that rounding moves: up to 0.018 measured from a 2e-6 perturbation)
                if r2 is not None and r2 > 0 and got["alpha"][target] == want["alpha"][target]:
                    assert abs(got["r2"][target] - r2) <= 0.05, (want["step"], target, got["r2"][target], r2)
                    compared += 1
        assert compared >= len(cpu["reports"])  # (the CPU run has 36 such probes over its 8 checkpoints)
    else:
        for got, want in zip(here["reports"], cpu["reports"]):
            keys = ("step", "hook", "config", "n_inputs", "d")
            assert [got[k] for k in keys] == [want[k] for k in keys]
            # the same start and first batch (drawn on the CPU): the first loss to rounding; then close
            _close(got["loss_curve"][0], want["loss_curve"][0], "first loss")
            _close([got["mse"], got["fvu"]], [want["mse"], want["fvu"]], "reconstruction", atol=1e-2)


def test_mps_falls_back_to_the_cpu_with_a_note(run_dir, monkeypatch, capsys):
    """MPS has no float64: the commands compute on the CPU there (bit for bit the CPU's numbers) and say so."""
    import grokscope.cli_args

    cpu = _command(run_dir, "probe")
    capsys.readouterr()
    monkeypatch.setattr(grokscope.cli_args, "device_from_args", lambda args: torch.device("mps"))
    assert _command(run_dir, "probe", "mps") == cpu
    assert "MPS has no float64" in capsys.readouterr().err
