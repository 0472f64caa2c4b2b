"""Training, the fast path, ensembles, checkpoints and resume on every device present (issue 20, items 1-3).

Every device test takes the ``device`` fixture: the CPU always, CUDA and MPS where they exist (elsewhere they skip
with "CUDA not available" / "MPS not available", the skips CI allows). The GPU forms of the fast path and of the
ensemble (:func:`~grokscope.models.fast.fast_logits_batched`, ``Ensemble.batched``) are also checked on the CPU
against the CPU forms, so they run in every CI session.
"""

from __future__ import annotations

import json

import pytest
import torch

from grokscope.cli import main
from grokscope.config import apply_overrides
from grokscope.device import mps_available
from grokscope.measures import progress_measures
from grokscope.models import build_model
from grokscope.models import fast as fast_mod
from grokscope.models.fast import FastPlan, fast_logits, fast_logits_batched, fast_tables, model_tensors
from grokscope.models.forward import choose_forward, model_device
from grokscope.store.files import load_tensors
from grokscope.store.run import STATE, Run, RunError, checkpoint_path
from grokscope.tasks import make_task, task_to
from grokscope.training import resume, train
from grokscope.training.ensemble import Ensemble, train_ensemble

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def small(tiny_config):
    return apply_overrides(
        tiny_config,
        {
            "task.p": 11,
            "train.epochs": 30,
            "train.log_every": 5,
            "train.checkpoint_every": 10,
            "train.measure_every": 10,
        },
    )


def _close(a, b, rtol=1e-4, atol=1e-6) -> bool:
    return bool(((a - b).abs() <= atol + rtol * b.abs()).all().all())


# --------------------------------------------------------------------------- single runs


def test_a_short_run_on_each_device_matches_the_cpu_run(tmp_path, small, device):
    cpu = train(apply_overrides(small, {"train.device": "cpu"}), tmp_path / "cpu", progress=False)
    run = train(apply_overrides(small, {"train.device": device}), tmp_path / f"on-{device}", progress=False)
    assert run.status == "completed"
    assert run.meta["device"].startswith(device) and run.meta["numerics"]
    if device == "cpu":  # the same device: bitwise
        assert run.metrics.equals(cpu.metrics)
        assert run.meta["numerics"] == "deterministic" and "not applied" not in run.meta["denormals"]
    else:  # another device: close, and the CPU-only helpers say they were skipped
        m, c = run.metrics, cpu.metrics
        assert list(m.columns) == list(c.columns) and list(m.index) == list(c.index)
        assert _close(m[["train_loss", "test_loss"]], c[["train_loss", "test_loss"]], rtol=1e-3)
        assert "not applied" in run.meta["denormals"] and "not governed" in run.meta["threads"]


def test_a_dropout_run_repeats_on_each_device_from_the_devices_seeded_generator(tmp_path, small, device):
    """Dropout draws from the device's default generator, which every epoch seeds (deterministic on CUDA): two runs
    in one process are equal whatever the generator held before, and the caller's state comes back."""
    from grokscope.training.placement import draw_generator

    cfg = apply_overrides(small, {"train.device": device, "model.dropout": 0.3, "train.deterministic": True})
    a = train(cfg, tmp_path / "a", progress=False)
    gen = draw_generator(torch.device(device) if device != "cuda" else torch.device("cuda", 0))
    gen.manual_seed(7)
    state = gen.get_state()
    b = train(cfg, tmp_path / "b", progress=False)
    assert a.metrics.equals(b.metrics) and torch.equal(gen.get_state(), state)


def test_checkpoints_and_the_resume_state_are_cpu_tensors_and_load_where_asked(tmp_path, small, device):
    run = train(apply_overrides(small, {"train.device": device, "train.epochs": 10}), tmp_path / "r", progress=False)
    for path in (checkpoint_path(run.dir, 10), run.dir / STATE):
        tensors, _ = load_tensors(path)
        assert tensors and all(t.device.type == "cpu" for t in tensors.values())
    assert model_device(run.load_model()).type == "cpu"
    assert model_device(run.load_model(device=device)).type == device


def test_a_cpu_run_resumes_with_auto_and_keeps_going_bitwise(tmp_path, small):
    whole = train(small, tmp_path / "whole", progress=False)
    cut = train(apply_overrides(small, {"train.epochs": 15, "train.device": "cpu"}), tmp_path / "cut", progress=False)
    config = json.loads((cut.dir / "config.json").read_text())
    config["train"].update(epochs=30, device="auto")  # this machine's auto is its CPU unless it has a GPU
    (cut.dir / "config.json").write_text(json.dumps(config))
    resumed = resume(cut.dir, progress=False, device="cpu")
    assert resumed.status == "completed" and resumed.meta["final_epoch"] == "30"
    # the cut run's last row (epoch 15) was its final evaluation, a forward over all pairs rather than the shared
    # training forward: equal to rounding; every other row and the final weights are bitwise the same
    assert resumed.metrics.drop(index=15).equals(whole.metrics.drop(index=15))
    assert _close(resumed.metrics.loc[15].dropna(), whole.metrics.loc[15].dropna(), rtol=1e-6)
    a, b = resumed.load_state_dict(), whole.load_state_dict()
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_a_run_resumed_on_another_device_continues_close_to_the_cpu(tmp_path, small, device):
    whole = train(small, tmp_path / "whole", progress=False)
    cut = train(apply_overrides(small, {"train.epochs": 15, "train.device": "cpu"}), tmp_path / "cut", progress=False)
    config = json.loads((cut.dir / "config.json").read_text())
    config["train"]["epochs"] = 30
    (cut.dir / "config.json").write_text(json.dumps(config))
    resumed = resume(cut.dir, progress=False, device=device)
    assert resumed.meta["device"].startswith(device) and resumed.meta["final_epoch"] == "30"
    m, w = resumed.metrics, whole.metrics
    assert list(m.index) == list(w.index)
    assert _close(m[["train_loss", "test_loss"]], w[["train_loss", "test_loss"]], rtol=1e-3)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible here: a config naming cuda runs")
def test_a_config_naming_a_missing_device_fails_in_one_line_and_device_cpu_overrides_it(tmp_path, small, capsys):
    cut = train(apply_overrides(small, {"train.epochs": 10}), tmp_path / "cut", progress=False)
    config = json.loads((cut.dir / "config.json").read_text())
    config["train"].update(epochs=20, device="cuda")
    (cut.dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(RunError, match="no CUDA device is visible.*--device cpu"):
        resume(cut.dir, progress=False)
    assert main(["train", "--resume", str(cut.dir), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no CUDA device is visible" in err and "--device cpu" in err
    assert main(["train", "--resume", str(cut.dir), "--device", "cpu", "--quiet"]) == 0
    assert Run(cut.dir).meta["final_epoch"] == "20" and Run(cut.dir).meta["device"] == "cpu"


@pytest.mark.parametrize("argv", [["train", "--preset", "tiny"], ["run", "--preset", "tiny", "--epochs", "2"]])
def test_device_errors_on_the_command_line_are_one_line_with_exit_2(tmp_path, capsys, argv):
    missing = "mps" if torch.cuda.is_available() else "cuda"
    if missing == "mps" and mps_available():
        pytest.skip("both CUDA and MPS are here: no missing device to name")
    for name, says in ((missing, "asked for, but"), ("gpu", "train.device")):
        out = tmp_path / name
        assert main([*argv, "--device", name, "--out", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and says in err and "Traceback" not in err, err
        assert not out.exists()  # nothing written


def test_show_prints_the_device_and_the_numerics(tmp_path, small, capsys):
    run = train(apply_overrides(small, {"train.epochs": 5}), tmp_path / "r", progress=False)
    assert main(["show", str(run.dir)]) == 0
    assert "device:     cpu (deterministic)" in capsys.readouterr().out


# --------------------------------------------------------------------------- the fast path


def _model_and_task(cfg, device):
    task = make_task(cfg.task)
    model = build_model(cfg.model, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=task.n_ctx)
    return model.to(device), task_to(task, device)


@pytest.mark.parametrize("act", ["relu", "gelu", "quadratic"])
def test_the_fast_path_equals_the_general_path_on_each_device(small, device, act):
    model, task = _model_and_task(apply_overrides(small, {"model.act_fn": act}), device)
    choice = choose_forward(model, task)
    if device == "mps":
        assert choice.path == "general" and "MPS" in choice.why
        return
    assert choice.path == "fast"
    x, y = task.train_tokens, task.train_labels
    grads = []
    for fn in (choice.fn, model):
        model.zero_grad(set_to_none=True)
        logits = fn(x)
        torch.nn.functional.cross_entropy(logits.double(), y).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
        grads[-1]["logits"] = logits.detach()
    fast, general = grads
    for name, g in general.items():
        assert fast[name].device.type == device
        assert torch.allclose(fast[name], g, rtol=1e-4, atol=1e-6), name


@pytest.mark.parametrize("act", ["relu", "gelu", "quadratic"])
def test_the_gpu_form_of_the_fast_path_equals_the_cpu_form_on_the_cpu(small, act, monkeypatch):
    """fast_logits_batched (what CUDA runs) against ExampleBlock's member-by-member form: values and gradients."""
    models = [
        _model_and_task(apply_overrides(small, {"model.act_fn": act, "model.init_seed": s}), "cpu")[0] for s in range(3)
    ]
    task = make_task(small.task)
    K, H = 3, small.model.n_heads
    tokens = torch.stack(
        [
            task.tokens[torch.randperm(task.tokens.shape[0], generator=torch.Generator().manual_seed(k))]
            for k in range(K)
        ]
    )
    labels = torch.stack([task.labels[t[:, 0] * 0 + torch.arange(t.shape[0])] for t in tokens])  # any labels will do
    plan = FastPlan(tokens, task.d_vocab, H)
    results = []
    for form in (fast_logits, fast_logits_batched):
        w = {
            n: torch.cat([model_tensors(m)[n] for m in models]).detach().requires_grad_() for n in fast_mod.PARAM_NAMES
        }
        logits = form(fast_tables(w, task.p), plan, act)
        torch.nn.functional.cross_entropy(logits.flatten(0, 1).double(), labels.flatten()).backward()
        results.append((logits.detach(), {n: t.grad for n, t in w.items()}))
    (a, ga), (b, gb) = results
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    for name in ga:
        assert (ga[name] is None) == (gb[name] is None), name
        if ga[name] is not None:
            assert torch.allclose(ga[name], gb[name], rtol=1e-4, atol=1e-7), name
    # without gradient, in blocks of members: the same logits as one block
    with torch.no_grad():
        tables = fast_tables(
            {n: torch.cat([model_tensors(m)[n] for m in models]) for n in fast_mod.PARAM_NAMES}, task.p
        )
        whole = fast_logits_batched(tables, plan, act)
        monkeypatch.setattr(fast_mod, "BATCHED_CHUNK", 1)
        assert torch.allclose(fast_logits_batched(tables, plan, act), whole, rtol=1e-6, atol=1e-6)
        assert torch.allclose(whole, fast_logits(tables, plan, act), rtol=1e-5, atol=1e-6)


def test_the_fast_path_makes_no_cpu_tensor_for_a_model_on_the_meta_device(small):
    """Every tensor the fast path makes follows the weights' device: on the 'meta' device (shapes only), a hidden
    CPU tensor would fail to combine with the weights."""
    model, _ = _model_and_task(small, "cpu")
    task = make_task(small.task)
    meta_w = {n: t.detach().to("meta") for n, t in model_tensors(model).items()}
    plan = FastPlan(task.tokens.to("meta").unsqueeze(0), task.d_vocab, small.model.n_heads)
    with torch.no_grad():
        out = fast_logits_batched(fast_tables(meta_w, task.p), plan, small.model.act_fn)
    assert out.device.type == "meta" and out.shape == (1, task.tokens.shape[0], task.d_vocab_out)


# --------------------------------------------------------------------------- ensembles and measures


@pytest.fixture
def members(small):
    base = apply_overrides(
        small, {"train.epochs": 12, "train.log_every": 4, "train.checkpoint_every": 6, "train.measure_every": 0}
    )
    return [
        apply_overrides(base, {"name": "a", "model.init_seed": 1}),
        apply_overrides(base, {"name": "b", "model.init_seed": 2, "optim.lr": 1e-3, "optim.weight_decay": 0.3}),
        apply_overrides(base, {"name": "c", "task.split_seed": 4, "task.train_fraction": 0.7}),
    ]


def test_an_ensemble_member_equals_a_single_run_on_each_device(tmp_path, members, device):
    configs = [apply_overrides(c, {"train.device": device}) for c in members]
    if device == "mps":
        with pytest.raises(ValueError, match="fast path.*MPS"):
            Ensemble(configs, device="mps")
        return
    runs = train_ensemble(configs, [tmp_path / f"e{k}" for k in range(3)], progress=False)
    for k, cfg in enumerate(configs):
        single = train(cfg, tmp_path / f"s{k}", progress=False)
        assert runs[k].meta["device"].startswith(device)
        assert _close(runs[k].metrics, single.metrics, rtol=1e-4, atol=1e-6)
        a, b = runs[k].load_state_dict(), single.load_state_dict()
        assert all(t.device.type == "cpu" for t in a.values())
        for name in b:
            assert torch.allclose(a[name], b[name], rtol=1e-4, atol=1e-5), name


def test_the_gpu_form_of_the_ensemble_step_equals_the_cpu_form_on_the_cpu(members):
    """Ensemble.batched (one cross-entropy, one fused AdamW per hyperparameter group) against member by member."""
    plain, batched = Ensemble(members), Ensemble(members)
    batched.batched = True
    for _ in range(8):
        la, lb = plain.step(), batched.step()
        assert torch.allclose(la, lb, rtol=1e-12, atol=0)
    for name in plain.names:
        assert torch.allclose(plain.w[name], batched.w[name], rtol=1e-5, atol=1e-7), name
    assert [float(s) for s in plain.steps[0]] == [float(s) for s in batched.steps[0]]


def test_the_measures_accept_a_model_on_a_device(small, device):
    model, task = _model_and_task(small, "cpu")
    cpu = progress_measures(model.eval(), task)
    moved_model, moved_task = model.to(device), task_to(task, device)
    with torch.no_grad():
        logits = choose_forward(moved_model, moved_task).fn(moved_task.tokens)
    on_device = progress_measures(moved_model, moved_task, logits=logits)
    assert set(on_device) == set(cpu)
    for key, value in cpu.items():
        assert on_device[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    assert model_device(moved_model).type == device  # measured through a copy: the model stays where it was
