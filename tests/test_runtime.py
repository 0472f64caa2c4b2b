"""Subnormals flushed to zero on every intra-op thread (grokscope.runtime), and what it buys after grokking."""

import json
import statistics
import time

import pytest
import torch

import grokscope
from grokscope.models.forward import choose_forward
from grokscope.runtime import ThreadGovernor, denormal_status, flush_denormal, flushes_denormals
from grokscope.training.loop import train_step
from grokscope.training.losses import cross_entropy
from grokscope.training.optim import make_optimizer

FLT_MIN = torch.finfo(torch.float32).tiny


@pytest.fixture
def two_threads():
    """Two intra-op threads (the conftest runs tests with one): the flag must reach the worker thread too."""
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(n)


def _parallel_products_flushed() -> float:
    """Independent of runtime.py's own probe: an elementwise product of 2^20 float32 numbers whose every
    result is subnormal (1e-20 * 1e-20), split by torch across its threads; the fraction that came out 0."""
    a = torch.full((1 << 20,), 1e-20)
    return float((a * a == 0).double().mean())


def test_flush_reaches_every_thread_and_is_restored(two_threads):
    assert _parallel_products_flushed() == 0.0  # IEEE by default: 1e-40 is representable as a subnormal
    with flush_denormal() as status:
        assert _parallel_products_flushed() == 1.0, "some intra-op thread still produces subnormals"
        assert flushes_denormals() and status == "flushed to zero on all 2 threads"
        with flush_denormal():  # nested: still on, and the inner exit leaves it on
            assert _parallel_products_flushed() == 1.0
        assert _parallel_products_flushed() == 1.0
    assert _parallel_products_flushed() == 0.0
    assert denormal_status() == "kept (IEEE subnormals)"


def test_the_main_thread_flag_alone_leaves_the_worker_thread_slow(two_threads):
    """Why runtime.py exists: torch.set_flush_denormal covers the calling thread only (half of the work)."""
    torch.set_flush_denormal(True)
    try:
        frac = _parallel_products_flushed()
    finally:
        torch.set_flush_denormal(False)
    assert 0.0 < frac < 1.0


def test_disabled_changes_nothing_and_an_exception_restores(two_threads):
    with flush_denormal(False) as status:
        assert status == "kept (IEEE subnormals)" and _parallel_products_flushed() == 0.0
    with pytest.raises(RuntimeError), flush_denormal():
        raise RuntimeError("boom")
    assert _parallel_products_flushed() == 0.0


def _confident(model, scale: float):
    """The model with its unembedding scaled: logit gaps of hundreds of nats, as after grokking and clean-up."""
    with torch.no_grad():
        model.unembed.W_U.mul_(scale)
    return model


def test_a_confident_models_loss_gradient_is_subnormal_without_the_flush_and_clean_with_it(two_threads):
    cfg = grokscope.apply_overrides(grokscope.get_preset("tiny"), {"task.p": 23})
    task = grokscope.make_task(cfg.task)
    model = _confident(
        grokscope.build_model(cfg.model, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=task.n_ctx), 300.0
    )
    fwd = choose_forward(model, task, fast=cfg.train.fast_path).fn

    def subnormal_fraction() -> float:
        logits = fwd(task.train_tokens)
        logits.retain_grad()
        cross_entropy(logits, task.train_labels).backward()
        g = logits.grad
        model.zero_grad()
        return float(((g != 0) & (g.abs() < FLT_MIN)).double().mean())

    assert subnormal_fraction() > 0.01  # the situation of a grokked run: many float32 subnormals in d logits
    with flush_denormal():
        assert subnormal_fraction() == 0.0


def _step_ms(fwd, opt, task, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        train_step(fwd, opt, task.train_tokens, task.train_labels, 0.0, torch.float64)
        out.append(1e3 * (time.perf_counter() - t0))
    return out


def test_a_post_grok_step_is_not_slower_than_an_early_one(two_threads):
    """A ratio in one process, not a timed test: the step of a model as confident as a cleaned-up one against the
    step of a fresh model, interleaved, medians. On CPUs with a subnormal penalty this was 5-10x without the flush."""
    cfg = grokscope.apply_overrides(grokscope.get_preset("nanda-mainline"), {"task.p": 53, "model.d_mlp": 256})
    task = grokscope.make_task(cfg.task)

    def build(scale):
        model = grokscope.build_model(cfg.model, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=task.n_ctx)
        model = _confident(model, scale)
        choice = choose_forward(model, task, fast=cfg.train.fast_path)
        assert choice.path == "fast"
        return choice.fn, make_optimizer(model, cfg.optim)

    early, late = build(1.0), build(300.0)
    with flush_denormal(cfg.train.flush_denormal):
        _step_ms(*early, task, 2), _step_ms(*late, task, 2)  # warm-up: plans, allocator
        t_early, t_late = [], []
        for _ in range(7):
            t_early += _step_ms(*early, task, 3)
            t_late += _step_ms(*late, task, 3)
    # fastest against fastest, and median against median, the smaller: a shared machine's stall inflates single
    # samples (and one lucky early sample deflates the fastest), while a subnormal penalty (every late step 5-10x
    # slower) shows in both ratios
    ratio = min(min(t_late) / min(t_early), statistics.median(t_late) / statistics.median(t_early))
    assert ratio <= 1.5, (
        f"post-grok step {ratio:.2f}x the early step "
        f"(medians {statistics.median(t_late):.2f} / {statistics.median(t_early):.2f} ms)"
    )


def test_a_run_records_and_shows_the_choice(tmp_path, capsys):
    from grokscope.cli import main

    cfg = grokscope.apply_overrides(grokscope.get_preset("tiny"), {"train.epochs": 3})
    run = grokscope.train(cfg, tmp_path / "on", progress=False)
    assert run.meta["denormals"].startswith("flushed to zero")
    off = grokscope.train(
        grokscope.apply_overrides(cfg, {"train.flush_denormal": False}), tmp_path / "off", progress=False
    )
    assert off.meta["denormals"] == "kept (IEEE subnormals)"
    assert main(["show", str(tmp_path / "on")]) == 0
    shown = capsys.readouterr().out
    assert "subnormals: flushed to zero" in shown
    parts = json.loads(run.meta["seconds"])
    assert {"updates", "evaluation", "checkpoints", "metrics_store", "other"} <= parts.keys()
    assert sum(parts.values()) == pytest.approx(float(run.meta["train_seconds"]), abs=0.02)  # disjoint, and all of it
    assert "time split: " + ", ".join(f"{k.replace('_', ' ')} {v:.1f} s" for k, v in parts.items()) in shown
    assert _parallel_products_flushed() == 0.0  # training left the process as it found it


# --------------------------------------------------------------------------- the thread governor


class _Threads:
    """torch.set_num_threads / get_num_threads stand-ins, so the governor's decisions are tested without a clock."""

    def __init__(self, monkeypatch, n):
        self.n = n
        monkeypatch.setattr(torch, "get_num_threads", lambda: self.n)
        monkeypatch.setattr(torch, "set_num_threads", self.set)

    def set(self, n):
        self.n = n


def _feed(gov, threads, cost, updates):
    """``updates`` updates whose seconds are ``cost[thread count]`` at the count in force."""
    for _ in range(updates):
        gov.record(cost[threads.n])


def test_governor_falls_back_to_one_thread_when_two_get_slow_and_returns_when_they_recover(monkeypatch):
    from grokscope.runtime import ThreadGovernor

    threads = _Threads(monkeypatch, 2)
    gov = ThreadGovernor(window=4, probe_every=40, slack=1.6)
    with gov:
        _feed(gov, threads, {2: 0.010, 1: 0.015}, 20)  # idle machine: two threads are faster
        assert threads.n == 2 and gov.switches == 0
        _feed(gov, threads, {2: 0.200, 1: 0.030}, 16)  # a competing process: two threads spin, one is 6x faster
        assert threads.n == 1 and gov.current == 1 and gov.switches == 1
        _feed(gov, threads, {2: 0.010, 1: 0.015}, 60)  # the machine frees up: the periodic probe finds two faster
        assert threads.n == 2 and gov.switches == 2
    assert "adaptive 1-2: 2 at the end, 2 switches" == gov.describe()


def test_governor_keeps_the_count_when_the_other_is_no_faster_and_restores_on_exit(monkeypatch):
    from grokscope.runtime import ThreadGovernor

    threads = _Threads(monkeypatch, 2)
    gov = ThreadGovernor(window=4, probe_every=1000, slack=1.6)
    with gov:
        _feed(gov, threads, {2: 0.010, 1: 0.015}, 8)
        _feed(gov, threads, {2: 0.030, 1: 0.045}, 8)  # everything 3x slower: the probe at one thread loses
        assert threads.n == 2 and gov.switches == 0
        probes = []
        monkeypatch.setattr(gov, "_set", lambda n: (probes.append(n), threads.set(n)))
        _feed(gov, threads, {2: 0.030, 1: 0.045}, 40)  # the slower step is the new normal: no probe every window
        assert probes == []
        threads.n = 1  # e.g. left at one thread by a probe when an exception ends the loop
    assert threads.n == 2  # the count found on entry
    assert ThreadGovernor(1).describe().endswith("(fixed)") and not ThreadGovernor(1).enabled


class _Flapping(ThreadGovernor):
    """A governor that changes the thread count every few updates (1, 1, 2, 1, 1, 2, ...), whatever they cost."""

    def record(self, seconds):
        self.calls = getattr(self, "calls", 0) + 1
        torch.set_num_threads(1 if self.calls % 3 else 2)


def test_a_run_whose_thread_count_changes_every_few_updates_equals_a_one_thread_run(tmp_path, monkeypatch, two_threads):
    """The governor may switch at any update: the weights and every logged number must not notice."""
    import grokscope.training.loop as loop

    cfg = grokscope.apply_overrides(
        grokscope.get_preset("quick"),
        {"task.p": 29, "train.epochs": 60, "train.measure_every": 20, "train.checkpoint_every": 30},
    )
    fixed = grokscope.train(cfg, tmp_path / "fixed", progress=False, threads=1)
    monkeypatch.setattr(loop, "ThreadGovernor", _Flapping)
    flapping = grokscope.train(cfg, tmp_path / "flapping", progress=False)
    a, b = fixed.metrics, flapping.metrics
    assert list(a.columns) == list(b.columns) and a.equals(b)
    for step in fixed.checkpoints:
        sa, sb = fixed.load_model(step).state_dict(), flapping.load_model(step).state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_an_ensemble_whose_thread_count_flaps_equals_a_one_thread_ensemble(tmp_path, monkeypatch, two_threads):
    import grokscope.training.ensemble as ensemble
    from grokscope.training.ensemble import train_ensemble

    base = grokscope.apply_overrides(
        grokscope.get_preset("quick"),
        {"task.p": 23, "train.epochs": 30, "train.measure_every": 10, "train.checkpoint_every": 15},
    )
    cfgs = [grokscope.apply_overrides(base, {"model.init_seed": s, "name": f"m{s}"}) for s in (0, 1)]
    torch.set_num_threads(1)
    fixed = train_ensemble(cfgs, [tmp_path / "fixed0", tmp_path / "fixed1"], progress=False)
    torch.set_num_threads(2)
    monkeypatch.setattr(ensemble, "ThreadGovernor", _Flapping)
    flapping = train_ensemble(cfgs, [tmp_path / "flap0", tmp_path / "flap1"], progress=False)
    for a, b in zip(fixed, flapping):
        assert a.metrics.equals(b.metrics)
        sa, sb = a.load_model(30).state_dict(), b.load_model(30).state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_threads_flag_fixes_the_count_and_refuses_nonsense(tmp_path, capsys, two_threads):
    from grokscope.cli import main

    assert main(["train", "--preset", "tiny", "--epochs", "2", "--threads", "0", "--out", str(tmp_path / "bad")]) == 2
    assert "--threads: must be >= 1" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    assert (
        main(
            ["train", "--preset", "tiny", "--epochs", "2", "--threads", "1", "--quiet", "--out", str(tmp_path / "one")]
        )
        == 0
    )
    assert "threads:    1 (fixed)" in capsys.readouterr().out
    assert torch.get_num_threads() == 2  # the caller's count again after the run
    assert main(["train", "--preset", "tiny", "--epochs", "2", "--quiet", "--out", str(tmp_path / "adaptive")]) == 0
    assert "threads:    adaptive 1-2" in capsys.readouterr().out


def test_without_the_openmp_entry_point_nothing_is_flushed(monkeypatch, two_threads):
    """Flushing on the calling thread alone would make the numbers depend on which thread ran which rows."""
    import grokscope.runtime as runtime

    monkeypatch.setattr(runtime, "_openmp_parallel", lambda: None)
    with flush_denormal() as status:
        assert status == "kept (IEEE subnormals)" and _parallel_products_flushed() == 0.0
    assert _parallel_products_flushed() == 0.0
