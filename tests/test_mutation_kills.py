"""Tests written to kill the mutants of tests/mutation/mutants.py that the rest of the suite let survive (issue 18,
part C). Each names the mutant(s) it kills; docs/testing.md has the score table and the mutants that stay alive."""

from __future__ import annotations

import dataclasses
import math
import os
import sqlite3
import stat

import numpy as np
import pandas as pd
import pytest
import torch
from test_progress import _random_model, _task  # the same tiny tasks and random models as the measures' tests

from grokscope.analysis.construct import quadratic_mlp_addition
from grokscope.measures import (
    NEURON_FVE_THRESHOLD,
    key_frequencies,
    key_frequencies_from_norms,
    logit_table,
    mlp_activations,
    neuron_frequency_fractions,
    progress_measures,
    restricted_excluded,
)
from grokscope.measures.fourier import basis_index, frequency_of_index
from grokscope.measures.phases import detect_phases, grok_epoch


def _grid_wave(p: int, k: int, fn, axis: str) -> torch.Tensor:
    """[p*p] fn(w_k a) (axis 'a') or fn(w_k b) (axis 'b') in grid order."""
    x = torch.arange(p * p, dtype=torch.float64)
    v = x // p if axis == "a" else x % p
    return fn(2 * math.pi * k * v / p)


# ----------------------------------------------------------------------------- measures: key-frequency rules


def test_gap_rule_accepts_a_ratio_of_exactly_the_threshold():
    """Kills gap-rule-ratio-boundary: the docstring's rule is 'ratio >= KEY_GAP_RATIO' (2.0)."""
    assert key_frequencies_from_norms(torch.tensor([4.0, 2.0, 2.0, 2.0])) == [1]  # 4 / 2 = 2: accepted
    assert key_frequencies_from_norms(torch.tensor([4.0, 2.01, 2.0, 2.0])) == []  # 1.99: rejected


@pytest.mark.parametrize("k", [2, 4, 6])
def test_a_linear_neuron_of_one_frequency_is_all_in_its_3x3_block(k):
    """Kills block-drop-constant-row: cos(w_k a) + sin(w_k b) lies in components (2k-1, 0) and (0, 2k) of the 2D DFT,
    the constant row and column of the block {0, 2k-1, 2k}^2."""
    p = 13
    acts = (_grid_wave(p, k, torch.cos, "a") + _grid_wave(p, k, torch.sin, "b"))[:, None]
    fracs = neuron_frequency_fractions(acts, p)[:, 0]
    assert fracs[k - 1].item() == pytest.approx(1.0, abs=1e-12)
    assert float(fracs.sum()) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("k", [1, 4, 5])
def test_the_square_of_a_wave_is_explained_only_with_quadratic_terms(k):
    """Kills harmonic-min-max: cos^2(w_k a) = 1/2 + cos(w_j a)/2 with j = min(2k mod p, p - 2k mod p), the
    harmonic the quadratic rule adds; the 3x3 block alone holds none of it."""
    p = 13
    acts = (_grid_wave(p, k, torch.cos, "a") ** 2)[:, None]
    assert neuron_frequency_fractions(acts, p, quadratic=True)[k - 1, 0].item() == pytest.approx(1.0, abs=1e-12)
    assert neuron_frequency_fractions(acts, p)[k - 1, 0].item() == pytest.approx(0.0, abs=1e-12)


def test_quadratic_network_neurons_sit_below_the_cluster_threshold():
    """Kills fve-threshold-constant. Every neuron of the x^2 network is (cos A + cos B)^2 = 1 + cos2A/2 + cos2B/2 +
    2 cosA cosB: variance 1/8 + 1/8 + 1, of which the 3x3 block holds the product, 1 / 1.25 = 0.8 < 0.85. So the
    neuron_cluster rule finds no key frequency, while every neuron is fully explained counting its squares."""
    p = 13
    task = _task(p)
    model = quadratic_mlp_addition(p, [2, 5])
    acts = mlp_activations(model, task)
    best = neuron_frequency_fractions(acts, p).max(dim=0).values
    assert torch.allclose(best, torch.full_like(best, 0.8), atol=1e-9)
    assert NEURON_FVE_THRESHOLD == 0.85
    assert key_frequencies(model, task, "neuron_cluster") == []


@pytest.mark.parametrize("weak, expected", [(0.4, [2, 5]), (0.2, [2])])
def test_w_e_norm_rule_keeps_rows_above_a_quarter_of_the_largest(weak, expected):
    """Kills we-norm-fraction-constant: W_E rows of frequency 5 scaled to 0.4 (kept: > 0.25) or 0.2 (dropped)."""
    p = 13
    model = quadratic_mlp_addition(p, [2, 5])
    with torch.no_grad():
        model.embed.W_E[:, 2:4] *= weak  # columns 2, 3 carry frequency 5
    assert key_frequencies(model, p=p, rule="W_E_norm") == expected


def test_frequency_of_index_inverts_basis_index():
    """Kills frequency-of-index."""
    assert frequency_of_index(0) == 0
    for k in range(1, 8):
        assert frequency_of_index(basis_index(k, "cos")) == k and frequency_of_index(basis_index(k, "sin")) == k


# ----------------------------------------------------------------------------- measures: restricted loss and wiring


def _independent_restricted(table: torch.Tensor, labels: torch.Tensor, train_rows: torch.Tensor, p: int, freqs):
    """Restricted and excluded loss by an ordinary least-squares fit over the expanded rows (numpy lstsq), scored
    by numpy: an independent derivation of restricted_excluded."""
    s = labels.numpy()
    cols = [np.ones(len(s))]
    for k in freqs:
        cols += [np.cos(2 * np.pi * k * s / p), np.sin(2 * np.pi * k * s / p)]
    x = np.stack(cols, axis=1)
    beta, *_ = np.linalg.lstsq(x, table.numpy(), rcond=None)
    restricted = x @ beta
    key = x[:, 1:] @ beta[1:]

    def ce(t, y):
        t = t - t.max(axis=1, keepdims=True)
        logp = t - np.log(np.exp(t).sum(axis=1, keepdims=True))
        return float(-logp[np.arange(len(y)), y].mean()), float((t.argmax(axis=1) == y).mean())

    tr = train_rows.numpy()
    return ce(restricted, s), ce(table.numpy()[tr] - key[tr], s[tr])


def test_restricted_loss_with_unequal_label_counts_matches_an_independent_fit():
    """Kills per-label-unweighted: for a*b mod p the label 0 occurs 2p-1 times and every other p-1 times, so the
    per-label scores must be weighted by the counts."""
    p = 11
    task = _task(p, "a*b", 0.4)
    counts = torch.bincount(task.labels, minlength=p)
    assert int(counts[0]) == 2 * p - 1 and bool((counts[1:] == p - 1).all())
    gen = torch.Generator().manual_seed(3)
    table = torch.randn(p * p, p, generator=gen, dtype=torch.float64) + 3 * torch.nn.functional.one_hot(task.labels, p)
    out = restricted_excluded(table, task.labels, task.train_idx, p, [1, 4])
    (r_loss, r_acc), (e_loss, e_acc) = _independent_restricted(table, task.labels, task.train_idx, p, [1, 4])
    assert out["restricted_loss"] == pytest.approx(r_loss, rel=1e-10) and out["restricted_acc"] == pytest.approx(r_acc)
    assert out["excluded_loss"] == pytest.approx(e_loss, rel=1e-10) and out["excluded_acc"] == pytest.approx(e_acc)


def test_progress_measures_do_not_depend_on_the_order_of_the_task_rows():
    """Kills train-rows-wrong-permutation and logit-table-no-grid-order: the measures read rows through
    task.pair_index (grid position of each row); the task built here has the same examples in a shuffled order
    (make_task's tasks are in grid order, where both permutations are the identity)."""
    p = 13
    task = _task(p, "a-b", 0.3)
    model = _random_model(task, seed=1)
    perm = torch.randperm(p * p, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(perm[perm], torch.arange(p * p))  # not an involution: grid != its inverse
    where = torch.empty_like(perm)
    where[perm] = torch.arange(p * p)  # new row of old row i
    shuffled = dataclasses.replace(
        task,
        tokens=task.tokens[perm],
        labels=task.labels[perm],
        pair_index=task.pair_index[perm],
        train_idx=where[task.train_idx].sort().values,
        test_idx=where[task.test_idx].sort().values,
    )
    freqs = [1, 3, 5]
    a = progress_measures(model, task, key_freqs=freqs)
    b = progress_measures(model, shuffled, key_freqs=freqs)
    assert a.keys() == b.keys()
    for name in a:
        assert b[name] == pytest.approx(a[name], rel=1e-9, abs=1e-12), name


def _gini_mean_difference(x: np.ndarray) -> float:
    """Gini as the mean absolute difference over twice the mean: sum_ij |x_i - x_j| / (2 n^2 mean)."""
    return float(np.abs(x[:, None] - x[None, :]).sum() / (2 * len(x) ** 2 * x.mean()))


def test_gini_of_w_l_and_w_e_from_an_independent_dft():
    """Kills gini-wl-uses-we: per-frequency norms from numpy's FFT (sqrt(2/p) |X_k| over the other axis) and the
    mean-difference form of Gini, for W_E[:p] over d_model and W_L = W_out W_U[:, :p] over d_mlp."""
    p = 13
    task = _task(p)
    model = _random_model(task, seed=2)
    w_e = model.W_E.detach().double().numpy()[:p]  # [p, d_model]
    w_l = (model.blocks[-1].mlp.W_out.detach().double() @ model.W_U.detach().double()[:, :p]).numpy()  # [d_mlp, p]
    k = np.arange(1, (p - 1) // 2 + 1)
    norms_e = np.sqrt(2 / p) * np.linalg.norm(np.fft.fft(w_e, axis=0)[k], axis=1)
    norms_l = np.sqrt(2 / p) * np.linalg.norm(np.fft.fft(w_l, axis=1)[:, k], axis=0)
    m = progress_measures(model, task)
    assert m["gini_W_E"] == pytest.approx(_gini_mean_difference(norms_e), rel=1e-9)
    assert m["gini_W_L"] == pytest.approx(_gini_mean_difference(norms_l), rel=1e-9)
    assert abs(m["gini_W_E"] - m["gini_W_L"]) > 1e-3  # the two differ on this model, so a swap shows


# ----------------------------------------------------------------------------- measures: phases


def _phase_curves(test_acc=None, spike_at=None) -> pd.DataFrame:
    steps = np.arange(0, 1001, 10)
    s = steps.astype(float)
    excluded = np.where(s <= 300, 5 - s / 100, 2 + (s - 300) / 100)  # minimum 2 at step 300
    if spike_at is not None:
        excluded[steps == spike_at] = 0.0  # one outlier point below the minimum
    log_test = np.interp(s, [0, 500, 700, 1000], [1.0, 1.0, -6.0, -6.0])
    df = pd.DataFrame(
        {
            "train_acc": np.clip(s / 100, 0, 1),
            "test_loss": 10**log_test,
            "excluded_loss": excluded,
            "test_acc": np.where(log_test <= -1.0, 1.0, 0.5) if test_acc is None else test_acc(s),
        },
        index=pd.Index(steps, name="step"),
    )
    return df


def test_grok_epoch_is_the_first_step_at_or_above_99_percent():
    """Kills grok-acc-constant and first-at-least-strict: 0.95 is not grokked, exactly 0.99 is."""
    df = pd.DataFrame({"test_acc": [0.5, 0.95, 0.98, 0.99, 1.0]}, index=pd.Index([0, 10, 20, 30, 40], name="step"))
    assert grok_epoch(df) == 30


def test_phase_at_boundaries_start_the_next_phase():
    """Kills phase-at-boundary: the phases are half-open intervals [start, end)."""
    ph = detect_phases(_phase_curves())
    assert ph.memorisation_end < ph.circuit_formation_end < ph.cleanup_end
    assert ph.phase_at(ph.memorisation_end - 1) == "memorisation"
    assert ph.phase_at(ph.memorisation_end) == "circuit_formation"
    assert ph.phase_at(ph.circuit_formation_end) == "cleanup"
    assert ph.phase_at(ph.cleanup_end) == "post_cleanup"


def test_one_outlier_point_does_not_move_the_memorisation_end():
    """Kills smooth-window-constant: the excluded loss is smoothed by a rolling median of 5 points, which ignores
    a single outlier (here at step 200, below the true minimum at 300)."""
    assert abs(detect_phases(_phase_curves()).memorisation_end - 300) <= 10
    assert abs(detect_phases(_phase_curves(spike_at=200)).memorisation_end - 300) <= 10


# ----------------------------------------------------------------------------- store: durability of atomic writes


def test_atomic_write_fsyncs_the_complete_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    """Kills skip-fsync, fsync-before-flush and skip-dir-fsync. A crash (power loss) after the rename must find the
    new bytes on disk, so: the temporary file is fsynced holding all its bytes, then renamed over the target, then
    the folder (which holds the rename) is fsynced. The calls are recorded through os.fsync and os.replace."""
    from grokscope.store.files import atomic_write_bytes

    events: list[tuple] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        st = os.fstat(fd)
        events.append(("fsync", "dir" if stat.S_ISDIR(st.st_mode) else "file", st.st_ino, st.st_size))
        return real_fsync(fd)

    def replace(src, dst, **kw):
        events.append(("replace", os.stat(src).st_ino))
        return real_replace(src, dst, **kw)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    data = os.urandom(1000)  # smaller than the write buffer: fsynced before the flush, the file would be empty
    atomic_write_bytes(target, data)
    monkeypatch.undo()
    ino = target.stat().st_ino
    assert target.read_bytes() == data
    assert events == [
        ("fsync", "file", ino, len(data)),
        ("replace", ino),
        ("fsync", "dir", tmp_path.stat().st_ino, events[-1][3]),
    ]


def test_safetensors_header_is_canonical_and_keeps_the_data_aligned():
    """Kills header-not-sorted and no-alignment-padding: the header is JSON with sorted keys and no spaces, padded
    with spaces to a multiple of 8 bytes (so the data section stays 8-byte aligned, as safetensors writes it)."""
    import json

    from grokscope.store.files import tensors_to_bytes

    for extra in range(9):
        meta = {"zeta": "1", "alpha": "x" * extra, "mid": "2"}
        raw = tensors_to_bytes({"w": torch.arange(3.0), "a": torch.zeros(2, dtype=torch.float64)}, meta)
        n = int.from_bytes(raw[:8], "little")
        assert n % 8 == 0, extra
        text = raw[8 : 8 + n].decode()
        header = json.loads(text)
        assert text.rstrip(" ") == json.dumps(header, sort_keys=True, separators=(",", ":"))


# ----------------------------------------------------------------------------- store: the metrics database


def test_a_reader_in_a_transaction_does_not_block_a_metrics_write(tmp_path):
    """Kills journal-delete: the viewer reads while training writes. With SQLite's write-ahead log a reader's open
    transaction does not stop a writer from committing; with a rollback journal the writer would wait for it
    (30 s here) and fail."""
    from grokscope.store.metrics import MetricsDB

    with MetricsDB(tmp_path / "m.sqlite") as db:
        db.log(0, {"a": 1.0})
        reader = sqlite3.connect(f"file:{tmp_path / 'm.sqlite'}?mode=ro", uri=True, timeout=0.1)
        try:
            reader.execute("BEGIN")
            assert reader.execute("SELECT count(*) FROM metrics").fetchone() == (1,)
            db.conn.execute("PRAGMA busy_timeout = 2000")  # a blocked commit fails in 2 s, not 30
            db.log(1, {"a": 2.0})  # commits while the read transaction is open
            assert reader.execute("SELECT count(*) FROM metrics").fetchone() == (1,)  # the reader's snapshot
            reader.execute("COMMIT")
            assert reader.execute("SELECT count(*) FROM metrics").fetchone() == (2,)
        finally:
            reader.close()


def test_metrics_database_syncs_at_commits(tmp_path):
    """Kills synchronous-off. What a power loss would lose cannot be observed in a test, so this checks the setting
    the durability rests on: synchronous=NORMAL (1) with WAL, i.e. the log is synced at every checkpoint."""
    from grokscope.store.metrics import MetricsDB

    with MetricsDB(tmp_path / "m.sqlite") as db:
        assert db.conn.execute("PRAGMA synchronous").fetchone() == (1,)
        assert db.conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


# ----------------------------------------------------------------------------- analysis


def _ce(t: np.ndarray, y: np.ndarray) -> float:
    t = t - t.max(axis=1, keepdims=True)
    return float(-(t - np.log(np.exp(t).sum(axis=1, keepdims=True)))[np.arange(len(y)), y].mean())


@pytest.fixture(scope="module")
def analysed():
    """A random transformer (4 dead MLP neurons) on a+b mod 13, its analysis with key frequencies {1, 3}, and the
    numbers it is checked against, derived here with numpy."""
    from grokscope.analysis.reverse import analyze_checkpoint

    p, freqs = 13, [1, 3]
    task = _task(p, "a+b", 0.3)
    model = _random_model(task, seed=4)
    with torch.no_grad():
        model.blocks[-1].mlp.W_in[:, :4] = 0.0
        model.blocks[-1].mlp.b_in[:4] = -1.0  # relu(-1) = 0 everywhere: dead
    a = analyze_checkpoint(model, task, key_freqs=freqs)
    with torch.no_grad():
        table = logit_table(model, task).numpy()  # the logits the analysis reads (the fast path's float32 forward)
        _, cache = model.run_with_cache(task.tokens)
    return {"a": a, "p": p, "freqs": freqs, "task": task, "model": model, "table": table, "cache": cache}


def test_analysis_losses_match_independent_scores(analysed):
    """Kills train-test-swapped and an-excluded-k-uses-all."""
    a, p, task, table = analysed["a"], analysed["p"], analysed["task"], analysed["table"]
    y = task.labels.numpy()
    tr, te = task.train_idx.numpy(), task.test_idx.numpy()
    assert a.losses["train_loss"] == pytest.approx(_ce(table[tr], y[tr]), rel=1e-9)
    assert a.losses["test_loss"] == pytest.approx(_ce(table[te], y[te]), rel=1e-9)
    for k in analysed["freqs"]:
        _, (e_loss, _) = _independent_restricted(torch.from_numpy(table), task.labels, task.train_idx, p, [k])
        assert a.losses[f"excluded_loss_k{k}"] == pytest.approx(e_loss, rel=1e-9), k
    _, (e_all, _) = _independent_restricted(torch.from_numpy(table), task.labels, task.train_idx, p, analysed["freqs"])
    assert abs(a.losses["excluded_loss_k1"] - e_all) > 1e-6  # removing one key is not removing both


def test_analysis_weight_measures_match_numpy(analysed):
    """Kills residual-no-sqrt and table5-gini-swapped: W_L's per-frequency norms from numpy's FFT; the residual is
    sqrt(1 - key energy / total energy); Table 5 holds Gini of W_E then of W_L."""
    a, p, model = analysed["a"], analysed["p"], analysed["model"]
    k = np.arange(1, (p - 1) // 2 + 1)
    w_e = model.W_E.detach().double().numpy()[:p]
    w_l = (model.blocks[-1].mlp.W_out.detach().double() @ model.W_U.detach().double()[:, :p]).numpy()
    n_e = np.sqrt(2 / p) * np.linalg.norm(np.fft.fft(w_e, axis=0)[k], axis=1)
    n_l = np.sqrt(2 / p) * np.linalg.norm(np.fft.fft(w_l, axis=1)[:, k], axis=0)
    key = sum(n_l[f - 1] ** 2 for f in analysed["freqs"])
    assert a.W_L_residual_fraction == pytest.approx(math.sqrt(1 - key / (n_l**2).sum()), rel=1e-9)
    assert a.table5.gini_W_E == pytest.approx(_gini_mean_difference(n_e), rel=1e-9)
    assert a.table5.gini_W_L == pytest.approx(_gini_mean_difference(n_l), rel=1e-9)


def test_logit_fit_is_ordinary_least_squares_on_row_centred_logits(analysed):
    """Kills logit-fit-no-centring: alpha_k and the FVE from numpy's lstsq on the regressors cos(w_k(s - c))."""
    a, p, table = analysed["a"], analysed["p"], analysed["table"]
    s = analysed["task"].labels.numpy()
    c = np.arange(p)
    centred = table - table.mean(axis=1, keepdims=True)
    x = np.stack([np.cos(2 * np.pi * k * (s[:, None] - c[None, :]) / p).ravel() for k in analysed["freqs"]], axis=1)
    alpha, *_ = np.linalg.lstsq(x, centred.ravel(), rcond=None)
    fve = 1 - ((centred.ravel() - x @ alpha) ** 2).sum() / (centred**2).sum()
    for k, al in zip(analysed["freqs"], alpha):
        assert a.logit_fit.alpha[k] == pytest.approx(al, rel=1e-8, abs=1e-12)
    assert a.logit_fit.fve == pytest.approx(fve, rel=1e-8, abs=1e-12)


def test_attention_fit_reads_attention_from_the_last_position_to_the_first(analysed):
    """Kills attention-wrong-key-position: each head's mean attention from '=' (last position) to token a."""
    a, cache = analysed["a"], analysed["cache"]
    pattern = cache["blocks.0.attn.hook_pattern"].double()  # [N, head, q, k]
    assert len(a.attention) == pattern.shape[1]
    for h in a.attention:
        assert h.mean == pytest.approx(float(pattern[:, h.head, -1, 0].mean()), rel=1e-9)


def test_mlp_fve_is_over_living_neurons_with_population_std(analysed):
    """Kills mlp-fve-dead-neurons and mlp-std-unbiased: Table 5's MLP FVE mean +- std is taken over the neurons
    that vary over the grid (4 dead ones here), std with ddof 0 (numpy's default)."""
    a, p, model, task = analysed["a"], analysed["p"], analysed["model"], analysed["task"]
    acts = mlp_activations(model, task)
    alive = acts.var(dim=0).numpy() > 0
    assert int((~alive).sum()) >= 4
    fracs = neuron_frequency_fractions(acts, p).numpy()  # [K, d_mlp]
    best = fracs[[k - 1 for k in analysed["freqs"]]].max(axis=0)[alive]
    assert a.table5.mlp_fve_mean == pytest.approx(best.mean(), rel=1e-9)
    assert a.table5.mlp_fve_std == pytest.approx(np.std(best), rel=1e-9)


@pytest.mark.parametrize("product_only", [True, False])
def test_block_mask_table_is_the_projection_on_the_kept_waves(product_only):
    """Kills block-mask-branches-swapped and block-mask-drop-constant: the kept part of a table equals its
    least-squares fit (numpy) on 1 and, per key k, the products cos/sin(w_k a) * cos/sin(w_k b) (product_only) or
    also the single waves cos/sin(w_k a), cos/sin(w_k b) (the 3x3 block)."""
    from grokscope.analysis.reverse import block_mask_table

    p, freqs = 11, [2, 3]
    table = torch.randn(p * p, p, generator=torch.Generator().manual_seed(5), dtype=torch.float64) + 2.0
    g = np.arange(p * p)
    a, b = g // p, g % p
    cols = [np.ones(p * p)]
    for k in freqs:
        ua = [np.cos(2 * np.pi * k * a / p), np.sin(2 * np.pi * k * a / p)]
        ub = [np.cos(2 * np.pi * k * b / p), np.sin(2 * np.pi * k * b / p)]
        cols += [x * y for x in ua for y in ub]
        if not product_only:
            cols += ua + ub
    x = np.stack(cols, axis=1)
    beta, *_ = np.linalg.lstsq(x, table.numpy(), rcond=None)
    kept = block_mask_table(table, p, freqs, product_only=product_only).numpy()
    assert np.allclose(kept, x @ beta, atol=1e-10)


def test_format_table_columns_fit_their_widest_cell():
    """Kills table-width-headers-only."""
    from grokscope.analysis.tables import format_table

    assert format_table(["k", "v"], [[1, "long cell"], [22, "x"]]) == "k   v\n--  ---------\n1   long cell\n22  x"


def test_rendered_fourier_table_lists_the_strongest_frequencies():
    """Kills table-top-ascending: the x^2 network uses frequencies 2 and 5 only, so the top 2 rows are 2 and 5."""
    from grokscope.analysis.reverse import analyze_checkpoint
    from grokscope.analysis.tables import render_analysis

    p = 13
    text = render_analysis(analyze_checkpoint(quadratic_mlp_addition(p, [2, 5]), _task(p)), top=2)
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("Fourier norms (top 2"))
    assert sorted(int(line.split()[0]) for line in lines[at + 3 : at + 5]) == [2, 5]
    assert all(line.rstrip().endswith("*") for line in lines[at + 3 : at + 5])


def test_operand_energies_of_one_operand_functions():
    """Kills zoo-energy-a-axis: activations that depend on a alone put all their variance in energy_a."""
    from grokscope.analysis.zoo import operand_asymmetry

    p = 7
    only_a = torch.stack([_grid_wave(p, 1, torch.cos, "a"), _grid_wave(p, 2, torch.sin, "a")], dim=1)
    out = operand_asymmetry(only_a, p)
    assert out["energy_a"] == pytest.approx(1.0) and out["energy_b"] == pytest.approx(0.0, abs=1e-12)
    swapped = operand_asymmetry(torch.stack([_grid_wave(p, 1, torch.cos, "b")], dim=1), p)
    assert swapped["energy_b"] == pytest.approx(1.0) and swapped["energy_a"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("formula, separable", [("a+b+3", True), ("2*a-b+5", True), ("a*b", False), ("a*b+1", False)])
def test_separability_with_a_nonzero_constant(formula, separable):
    """Kills zoo-separable-sign: f(a, b) = g(a) + h(b) mod p also when f(0, 0) != 0."""
    from grokscope.analysis.zoo import task_structure

    p = 7
    task = _task(p, formula)
    assert task_structure(task.labels, p)["separable"] is separable


def test_parity_bits_leave_out_the_constant_input():
    """Kills zoo-parity-constant-bit: the last input of a VectorMLP is the constant 1, never a parity bit, even
    when a neuron weights it most (its bias)."""
    from types import SimpleNamespace

    from grokscope.analysis.zoo import parity_neuron_bits

    w_in = torch.tensor([[2.0, 0.1], [-2.0, 0.1], [0.1, 0.1], [0.1, 0.1], [5.0, 0.1]])  # 4 bits + the constant
    w_out = torch.tensor([[1.0, 1.0], [0.01, 0.01]])
    out = parity_neuron_bits(SimpleNamespace(mlp=SimpleNamespace(W_in=w_in, W_out=w_out)))
    assert [n["neuron"] for n in out] == [0] and out[0]["bits"] == [0, 1]


def test_checkpoint_scores_of_an_exact_network():
    """Kills zoo-acc-argmin: the x^2 network computes a+b mod p exactly, so both accuracies are 1 and the losses
    are the cross-entropy of its logits."""
    from grokscope.analysis.zoo import checkpoint_scores

    p = 13
    task = _task(p)
    model = quadratic_mlp_addition(p, [2, 5])
    scores = checkpoint_scores(model, task)
    assert scores["train_acc"] == 1.0 and scores["test_acc"] == 1.0
    with torch.no_grad():
        logits = model(task.tokens).double().numpy()
    y, tr = task.labels.numpy(), task.train_idx.numpy()
    assert scores["train_loss"] == pytest.approx(_ce(logits[tr], y[tr]), rel=1e-6)


# ----------------------------------------------------------------------------- store: damaged safetensors files


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda raw: raw[:5], "(5 bytes, shorter than a header)"),
        (lambda raw: raw[:7], "(7 bytes, shorter than a header)"),
        (lambda raw: raw[: 8 + int.from_bytes(raw[:8], "little") - 3], "(truncated: the header alone needs"),
        (lambda raw: raw + b"\0" * 8, "(extra bytes at the end:"),
        (lambda raw: raw[:-1], "(truncated: "),
    ],
    ids=["5 bytes", "7 bytes", "inside the header", "extra bytes", "last byte cut"],
)
def test_each_kind_of_damage_gets_its_own_diagnosis(tmp_path, damage, message):
    """Kills short-file-bound, header-bound and extra-bytes-accepted: every damage is reported, and by what it
    is (the checksum would catch some of them too, but with a message that misleads)."""
    from grokscope.store.errors import DamagedFileError
    from grokscope.store.files import check_tensors_file, load_tensors, save_tensors

    path = tmp_path / "t.safetensors"
    save_tensors(path, {"w": torch.arange(6.0)}, {"k": "v"})
    path.write_bytes(damage(path.read_bytes()))
    for read in (check_tensors_file, load_tensors):
        with pytest.raises(DamagedFileError) as e:
            read(path)
        assert message in str(e.value) and str(path) in str(e.value)


def test_non_finite_metric_values_are_stored_as_null(tmp_path):
    """Kills nan-stored: SQLite turns a NaN into NULL by itself, but keeps infinities; the store documents NULL for
    every non-finite value (a diverged loss reads back as missing, not as inf)."""
    from grokscope.store.metrics import MetricsDB

    with MetricsDB(tmp_path / "m.sqlite") as db:
        db.log(3, {"a": float("inf"), "b": float("-inf"), "c": float("nan"), "d": 1.5})
        assert db.rows() == [(3, "a", None), (3, "b", None), (3, "c", None), (3, "d", 1.5)]


def test_logging_a_step_again_replaces_its_values(tmp_path):
    """Kills insert-or-ignore and meta-insert-or-ignore: a second 'analyze --all-steps' rewrites the _fixed metrics
    of every step, and the run's status moves from running to done: the newest value wins."""
    from grokscope.store.metrics import MetricsDB

    with MetricsDB(tmp_path / "m.sqlite") as db:
        db.log(5, {"excluded_loss_fixed": 1.0, "a": 7.0})
        db.log(5, {"excluded_loss_fixed": 2.0})
        db.set_meta({"status": "running"})
        db.set_meta({"status": "done"})
        assert db.rows() == [(5, "a", 7.0), (5, "excluded_loss_fixed", 2.0)]
        assert db.meta() == {"status": "done"}


def test_last_step_is_the_largest_logged(tmp_path):
    """Kills last-step-min (check_run uses it to tell a run that has trained)."""
    from grokscope.store.metrics import MetricsDB

    with MetricsDB(tmp_path / "m.sqlite") as db:
        assert db.last_step() is None
        for step in (0, 10, 5):
            db.log(step, {"a": float(step)})
        assert db.last_step() == 10


def test_a_run_loads_its_last_checkpoint_by_default(tmp_path, tiny_config):
    """Kills load-first-checkpoint: checkpoints 0, 10 and 20 hold different tensors; no step means 20."""
    from grokscope.store.run import CONFIG, load_run, save_checkpoint

    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / CONFIG).write_text(tiny_config.to_json())
    for step in (20, 0, 10):
        save_checkpoint(run_dir, step, {"w": torch.full((2,), float(step))})
    run = load_run(run_dir)
    assert run.checkpoints == [0, 10, 20]
    assert torch.equal(run.load_state_dict()["w"], torch.full((2,), 20.0))
    assert torch.equal(run.load_state_dict(10)["w"], torch.full((2,), 10.0))


def test_write_json_refuses_hidden_and_nested_names(tmp_path, tiny_config):
    """Kills write-json-dotfile: '.name' is the prefix of the atomic writes' temporaries (and hidden), '/' leaves
    the run folder."""
    from grokscope.store.run import CONFIG, load_run

    (tmp_path / CONFIG).write_text(tiny_config.to_json())
    run = load_run(tmp_path)
    for name in (".config.json.x.tmp", ".hidden", "sub/x.json"):
        with pytest.raises(ValueError, match="invalid file name"):
            run.write_json(name, {})
    assert run.write_json("ok.json", {"a": 1}) == tmp_path / "ok.json"


def test_repair_checkpoint_leaves_an_intact_checkpoint_alone(tmp_path):
    """Kills repair-always: it rewrites a checkpoint only when it is missing or damaged, and says whether it did."""
    from grokscope.store.run import checkpoint_path, repair_checkpoint, save_checkpoint

    state = {"w": torch.arange(4.0)}
    save_checkpoint(tmp_path, 10, state)
    path = checkpoint_path(tmp_path, 10)
    ino = path.stat().st_ino
    assert repair_checkpoint(tmp_path, 10, state) is False
    assert path.stat().st_ino == ino  # not replaced by an atomic write
    path.write_bytes(path.read_bytes()[:-3])
    assert repair_checkpoint(tmp_path, 10, state) is True and path.stat().st_ino != ino
    assert repair_checkpoint(tmp_path, 20, state) is True and checkpoint_path(tmp_path, 20).is_file()


def test_resuming_a_trained_run_without_its_metrics_database_is_refused(tmp_path, tiny_config):
    """Kills state-epoch-missing-metrics: a resume point at epoch 5 and no metrics.sqlite: resuming would train on
    with the curves of epochs 0-5 gone."""
    from grokscope.store.errors import DamagedFileError
    from grokscope.store.files import save_tensors
    from grokscope.store.run import CONFIG, STATE, check_run

    (tmp_path / CONFIG).write_text(tiny_config.to_json())
    save_tensors(tmp_path / STATE, {"w": torch.zeros(2)}, {"epoch": "5"})
    check_run(tmp_path)  # reading is fine
    with pytest.raises(DamagedFileError, match="metrics.sqlite: missing, although the run has trained to epoch 5"):
        check_run(tmp_path, resume=True)
