"""Sweeps on devices: --device is how, not what (names, finished cells, resumes across devices), the local executor's
plan on GPUs (one worker per visible GPU, each seeing only its own; GPU ensembles bounded by memory), tested on the
CPU by injecting the GPU count; the progress line (cells/s, ETA); the CLI's one-line device errors."""

import os
import subprocess
import sys

import pytest
import torch
from faults_util import interrupted_at_update

from grokscope.cli import main
from grokscope.config import apply_overrides
from grokscope.presets import get_preset
from grokscope.store.run import Run
from grokscope.sweep import jobs
from grokscope.sweep.devices import GPU_ENSEMBLE, ensemble_limit, local_placement, member_bytes, visible_gpu_ids
from grokscope.sweep.jobs import plan_jobs, use_gpu, worker_init
from grokscope.sweep.layout import SweepDir, SweepError
from grokscope.sweep.local import LocalExecutor, plan_sweep, run_sweep, with_device
from grokscope.sweep.naming import config_hash, same_cell
from grokscope.sweep.progress import SweepProgress, format_seconds
from grokscope.sweep.spec import SweepSpecError, expand, make_spec
from grokscope.training import train

GIB = 2**30
QUIET = dict(progress=False, log=lambda s: None)


def spec(**kw):
    base = dict(
        name="d",
        base="tiny",
        set={"train.epochs": 30},
        axes={"optim.weight_decay": [0.0, 1.0]},
        seeds=2,
        outcome={"tau": 5},
    )
    return make_spec(**{**base, **kw})


# --------------------------------------------------------------------------- the device is how, not what


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:1", "mps", "auto"])
def test_the_device_is_not_part_of_a_cells_name(device):
    cells = expand(spec())
    moved = with_device(cells, device)
    assert [c.name for c in moved] == [c.name for c in cells]
    assert all(c.config.train.device == device for c in moved)
    assert config_hash(moved[0].config) == config_hash(cells[0].config) and same_cell(moved[0].config, cells[0].config)
    other = apply_overrides(cells[0].config, {"optim.lr": 0.5})
    assert config_hash(other) != config_hash(cells[0].config) and not same_cell(other, cells[0].config)


def test_the_device_is_no_axis_and_a_bad_name_is_one_line():
    with pytest.raises(SweepSpecError, match="train.device says how cells run, not what they are"):
        spec(axes={"train.device": ["cpu", "auto"]})
    with pytest.raises(SweepError, match="--device: expected one of auto, cpu, cuda, cuda:N, mps; got 'gpu'"):
        with_device(expand(spec()), "gpu")


def test_the_device_still_separates_ensembles():
    cells = expand(spec())
    mixed = with_device(cells[:2], "cpu") + with_device(cells[2:], "auto")
    planned = plan_jobs(mixed, {c.name: "new" for c in mixed}, workers=1)
    groups = [{c.config.train.device for c in mixed if c.name in j.names} for j in planned]
    assert len(planned) == 2 and all(len(g) == 1 for g in groups)


def test_a_sweep_continued_on_another_device_keeps_its_finished_cells(tmp_path):
    first = run_sweep(spec(), tmp_path / "s", workers=0, device="cpu", **QUIET)
    assert first.ran == 4 and {Run(tmp_path / "s" / "cells" / n).config.train.device for n in first.frame["name"]} == {
        "cpu"
    }
    again = run_sweep(spec(), tmp_path / "s", workers=0, device="auto", **QUIET)
    assert again.ran == 0 and again.frame["phase"].tolist() == first.frame["phase"].tolist()
    assert plan_sweep(spec(), tmp_path / "s").counts() == {"done": 4, "partial": 0, "new": 0}


def test_an_interrupted_cell_resumes_on_the_new_device_bit_for_bit(tmp_path):
    s = spec(axes={"optim.weight_decay": [1.0]}, seeds=1, set={"train.epochs": 30, "train.checkpoint_every": 10})
    with interrupted_at_update(15):
        run_sweep(s, tmp_path / "s", workers=0, device="auto", **QUIET)
    (cell,) = expand(s)
    d = tmp_path / "s" / "cells" / cell.name
    assert Run(d).config.train.device == "auto" and plan_sweep(s, tmp_path / "s").states == {cell.name: "partial"}
    res = run_sweep(s, tmp_path / "s", workers=0, device="cpu", **QUIET)
    assert res.frame["status"].tolist() == ["completed"]
    assert [e["how"] for e in SweepDir(tmp_path / "s").events() if e["event"] == "cell"] == ["resume"]
    assert Run(d).config.train.device == "auto" and Run(d).meta.get("device") == "cpu"  # resumed where --device said
    ref = train(cell.config, tmp_path / "ref", progress=False).metrics
    assert Run(d).metrics[["train_loss", "test_acc"]].equals(ref[["train_loss", "test_acc"]])


# --------------------------------------------------------------------------- the plan on GPUs (injected count)


def test_one_worker_per_visible_gpu_and_gpu_sized_ensembles():
    cfg = expand(spec())[0].config
    for device in ("auto", "cuda"):
        p = local_placement(device, cfg, workers=None, cores=2, gpus=4, memory=80 * GIB)
        assert (p.workers, p.gpu_ids, p.max_ensemble) == (4, ("0", "1", "2", "3"), GPU_ENSEMBLE)
        assert "4 workers on 4 GPUs" in p.describe() and "worker 3: GPU 3" in p.describe()
    # more workers than GPUs: round-robin, and the memory bound shared
    p = local_placement("cuda", cfg, workers=3, cores=2, gpus=2, memory=80 * GIB)
    assert p.gpu_ids == ("0", "1", "0")
    # --ensemble-size overrides the default; the CPU keeps its own default
    assert (
        local_placement("cuda", cfg, workers=None, cores=2, gpus=1, max_ensemble=8, memory=80 * GIB).max_ensemble == 8
    )
    p = local_placement("auto", cfg, workers=None, cores=2, gpus=0)
    assert (p.workers, p.gpu_ids, p.max_ensemble) == (2, (), 16)
    p = local_placement("cpu", cfg, workers=None, cores=2, gpus=4)
    assert (p.workers, p.gpu_ids) == (2, ())
    # cuda:N pins every worker to GPU N: the workers' environment is left alone
    p = local_placement("cuda:1", cfg, workers=None, cores=2, gpus=2, memory=80 * GIB)
    assert (p.workers, p.gpu_ids) == (1, ())


def test_the_workers_gpus_follow_the_drivers_visible_devices(monkeypatch):
    assert visible_gpu_ids(2, {"CUDA_VISIBLE_DEVICES": "5,7"}) == ["5", "7"]
    assert visible_gpu_ids(2, {"CUDA_VISIBLE_DEVICES": "GPU-a1, GPU-b2,"}) == ["GPU-a1", "GPU-b2"]
    assert visible_gpu_ids(3, {}) == ["0", "1", "2"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,6")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)  # what torch would say with two GPUs visible
    p = local_placement("cuda", expand(spec())[0].config, workers=None, cores=2, memory=80 * GIB)
    assert p.gpu_ids == ("3", "6")


def test_missing_gpus_are_one_line():
    cfg = expand(spec())[0].config
    with pytest.raises(ValueError, match="only 2 CUDA device"):
        local_placement("cuda:2", cfg, workers=None, cores=2, gpus=2)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device is visible"):
            local_placement("cuda", cfg, workers=None, cores=2, gpus=0)
        with pytest.raises(SweepError, match="^--device cuda: 'cuda' asked for, but no CUDA device is visible"):
            LocalExecutor(gpus=0).place("cuda", cfg, None)


def test_the_ensemble_size_is_bounded_by_the_gpu_memory():
    big = get_preset("nanda-mainline")  # p = 113, the setting the issue sizes K for
    per = member_bytes(big)
    assert 50 * 2**20 < per < 2 * GIB
    k16, k80 = ensemble_limit(big, 16 * GIB, 10_000), ensemble_limit(big, 80 * GIB, 10_000)
    assert 1 <= k16 < k80 and k80 == pytest.approx(5 * k16, rel=0.05)
    assert ensemble_limit(big, 80 * GIB, 10_000, sharing=2) == pytest.approx(k80 / 2, abs=1)
    assert ensemble_limit(big, None, 64) == 64 and ensemble_limit(big, 1, 64) == 1
    p = local_placement("cuda", big, workers=None, cores=2, gpus=1, memory=16 * GIB)
    assert p.max_ensemble == min(GPU_ENSEMBLE, k16) and f"at most {k16} members fit 70% of 16 GiB" in p.describe()
    # an explicit --ensemble-size is taken as given (the user may know better), with the estimate beside it
    p = local_placement("cuda", big, workers=None, cores=2, gpus=1, max_ensemble=128, memory=16 * GIB)
    assert p.max_ensemble == 128 and "--ensemble-size 128 taken as given" in p.describe()
    p = local_placement("cuda", big, workers=2, cores=2, gpus=1, memory=80 * GIB)
    assert p.max_ensemble == min(GPU_ENSEMBLE, ensemble_limit(big, 80 * GIB, 10_000, sharing=2))


def test_plan_on_gpus_packs_cells_into_large_ensembles(tmp_path):
    s = spec(axes={"optim.weight_decay": [0.0, 0.5, 1.0, 2.0, 3.0]}, seeds=20)  # 100 compatible cells
    cpu = plan_sweep(s, tmp_path / "s", workers=2)
    gpu = plan_sweep(s, tmp_path / "s", workers=None, gpus=2)
    assert sorted(j.size for j in cpu.jobs) == [12] * 4 + [13] * 4  # 8 chunks of at most 16 over 2 workers
    assert sorted(j.size for j in gpu.jobs) == [50, 50]  # 2 chunks of at most 64, one per GPU
    assert "2 workers on 2 GPUs" in gpu.describe()


def test_each_gpu_worker_sees_only_its_own_gpu(tmp_path):
    """The local executor with two (injected) GPUs: two spawned workers, one CUDA_VISIBLE_DEVICES each, set before
    torch starts CUDA; ``auto`` cells then train on the CPU here (no CUDA in this torch) with the in-process run's
    outcomes."""
    ref = run_sweep(spec(), tmp_path / "ref", workers=0, ensemble=False, **QUIET).frame
    ex = LocalExecutor(gpus=2, gpu_memory=16 * GIB)
    res = run_sweep(spec(), tmp_path / "s", executor=ex, ensemble=False, **QUIET)
    assert not res.errors
    workers = [e["worker"] for e in SweepDir(tmp_path / "s").events() if e["event"] == "cell"]
    gpu_of = {w.split()[0]: w.rpartition(" gpu ")[2] for w in workers}  # host:pid -> its GPU
    assert len(workers) == 4 and all(" gpu " in w for w in workers)
    assert set(gpu_of.values()) <= {"0", "1"} and len(set(gpu_of.values())) == len(gpu_of)  # no GPU shared
    cols = ["name", "status", "phase", "final_train_loss", "final_test_loss", "final_test_acc"]
    if not torch.cuda.is_available():  # with real CUDA, "auto" cells compute on a GPU: close, not equal
        assert ref[cols].astype(str).equals(res.frame[cols].astype(str))


def hide_visible_devices(monkeypatch) -> None:
    """No CUDA_VISIBLE_DEVICES for the test, and none after it (what use_gpu sets is undone): set first, so that
    monkeypatch records it, then deleted."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")


def test_use_gpu_refuses_when_cuda_started_first(monkeypatch):
    hide_visible_devices(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    with pytest.raises(RuntimeError, match="before it could be given GPU 1"):
        use_gpu("1")
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)  # CUDA had read the variable already
    with pytest.raises(RuntimeError, match="sees 2 GPUs after choosing GPU 1"):
        use_gpu("1")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"


def test_worker_init_takes_one_gpu_from_the_queue(monkeypatch):
    import queue

    hide_visible_devices(monkeypatch)
    monkeypatch.setattr(jobs, "_die_with_parent", lambda: None)
    q: queue.Queue = queue.Queue()
    for g in ("4", "5"):
        q.put(g)
    before = torch.get_num_threads()
    try:
        worker_init(1, q)
    finally:
        torch.set_num_threads(before)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "4" and q.get_nowait() == "5"
    assert jobs.worker_label().endswith(" gpu 4")


# --------------------------------------------------------------------------- progress


def test_progress_reports_cells_per_second_and_the_eta():
    now = [100.0]
    lines: list[str] = []
    p = SweepProgress(10, 2, "s", enabled=None, log=lines.append, clock=lambda: now[0], every=30)
    assert p.rate() is None and p.eta() is None and p.line() == "s: 2/10 cells, - cells/s, ETA ?"
    now[0] = 110.0
    p.update(2, "grok=2")  # 2 cells in 10 s: the 2 done before this run do not count
    assert p.rate() == pytest.approx(0.2) and p.eta() == pytest.approx(30.0)
    assert p.line() == "s: 4/10 cells, 0.2 cells/s, ETA 30s, grok=2"
    assert lines == []  # pytest's stderr is no terminal: a line at most every 30 s
    now[0] = 131.0
    p.update(3)
    assert lines == ["s: 7/10 cells, 0.161 cells/s, ETA 19s"]
    now[0] = 132.0
    p.update(3)  # the last cells: always a line
    assert lines[-1].startswith("s: 10/10 cells") and "ETA 0s" in lines[-1]
    p.close()
    silent: list[str] = []
    q = SweepProgress(3, 0, "q", enabled=False, log=silent.append)
    q.update(3)
    assert silent == []
    assert [format_seconds(s) for s in (0, 59.4, 194, 7500)] == ["0s", "59s", "3m14s", "2h05m"]


# --------------------------------------------------------------------------- the command line


def test_cli_device_errors_are_one_line_and_exit_2(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("checks the missing-CUDA message: this machine has CUDA")
    out = tmp_path / "s"
    assert main(["sweep", "--preset", "wd-fraction-mini", "--out", str(out), "--device", "cuda", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--device cuda: 'cuda' asked for, but no CUDA device is visible" in err
    assert not out.exists()
    assert main(["sweep", "--preset", "wd-fraction-mini", "--out", str(out), "--device", "tpu", "--dry-run"]) == 2
    assert "expected one of auto, cpu, cuda, cuda:N, mps; got 'tpu'" in capsys.readouterr().err


def test_cli_dry_run_names_the_placement(tmp_path, capsys):
    assert (
        main(
            [
                "sweep",
                "--preset",
                "wd-fraction-mini",
                "--out",
                str(tmp_path / "s"),
                "--dry-run",
                "--device",
                "cpu",
                "--workers",
                "2",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "device cpu: 2 workers; ensembles of at most 16 cells" in out


def test_cli_help_explains_device_and_ensemble_size():
    text = subprocess.run(
        [sys.executable, "-m", "grokscope", "sweep", "--help"], capture_output=True, text=True, timeout=120
    ).stdout
    flat = " ".join(text.split())
    assert "--device NAME" in text and "one worker per visible GPU" in flat and "64 on a GPU" in flat
    assert "a sweep continues on another machine" in flat
