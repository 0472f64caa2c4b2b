"""`grokscope analyze` on zoo tasks (issue 7): the analyses that fit each task, on tiny trained runs."""

import json
import math

import numpy as np
import pytest
import torch

from grokscope.analysis.zoo import sparser_basis, spectra_both_bases, task_structure
from grokscope.cli import main
from grokscope.config import apply_overrides
from grokscope.presets import get_preset
from grokscope.training import loop


def _tiny_run(tmp_path, name="run", preset="tiny", **overrides):
    o = {"train.epochs": 4, "train.log_every": 2, "train.measure_every": 0, "train.checkpoint_every": 2} | overrides
    return loop.train(apply_overrides(get_preset(preset), o), tmp_path / name, progress=False)


def _analyze(run, capsys):
    assert main(["analyze", str(run.dir)]) == 0
    return json.loads((run.dir / "analysis.json").read_text()), capsys.readouterr().out


def _spectra_reference(w_e, p: int, eta: float = 0.25) -> dict:
    """The spectra of W_E[:p] computed apart from grokscope's Fourier code: numpy's FFT in the additive basis over Z_p,
    and over Z_p^* on the tokens reordered as g^0, g^1, ..., g^(p-2) (g: the smallest primitive root, by brute force),
    the orthonormal cos/sin norms sqrt(2/n) |Re F_k|, sqrt(2/n) |Im F_k| (the Nyquist row sqrt(1/n) |F_(n/2)|), and FFS,
    FCR by their documented definitions (used: norm > eta * max; FCR: mean min/max of cos and sin over the used)."""
    w = w_e.detach().to(torch.float64).numpy()[:p]
    g = next(g for g in range(2, p) if len({pow(g, i, p) for i in range(p - 1)}) == p - 1)

    def pairs(x, n, last):
        F = np.fft.fft(x, axis=0)
        return (
            math.sqrt(2 / n) * np.linalg.norm(F[1:last].real, axis=1),
            math.sqrt(2 / n) * np.linalg.norm(F[1:last].imag, axis=1),
            F,
        )

    def ffs_fcr(c, s):
        norm = np.hypot(c, s)
        used = norm > eta * norm.max()
        return float(used.mean()), float((np.minimum(c, s)[used] / np.maximum(c, s)[used]).mean())

    c_add, s_add, _ = pairs(w, p, (p - 1) // 2 + 1)
    n = p - 1
    c_log, s_log, G = pairs(w[[pow(g, i, p) for i in range(n)]], n, n // 2)
    out = {
        "generator": g,
        "norms_add": np.hypot(c_add, s_add).tolist(),
        "norms_log": np.hypot(c_log, s_log).tolist(),
        "nyquist_log": math.sqrt(1 / n) * float(np.linalg.norm(G[n // 2].real)),
    }
    out["ffs_add"], out["fcr_add"] = ffs_fcr(c_add, s_add)
    out["ffs_log"], out["fcr_log"] = ffs_fcr(c_log, s_log)
    margin = 0.1  # sparser_basis: lower FFS by more than this
    out["sparser_basis"] = (
        "additive"
        if out["ffs_add"] < out["ffs_log"] - margin
        else "discrete-log"
        if out["ffs_log"] < out["ffs_add"] - margin
        else "neither"
    )
    return out


def _assert_spectra_match(sp: dict, ref: dict) -> None:
    for key in ("ffs_add", "fcr_add", "ffs_log", "fcr_log", "nyquist_log"):
        assert sp[key] == pytest.approx(ref[key], rel=1e-9, abs=1e-12), key
    assert sp["norms_add"] == pytest.approx(ref["norms_add"], rel=1e-9) and sp["norms_log"] == pytest.approx(
        ref["norms_log"], rel=1e-9
    )
    assert sp["generator"] == ref["generator"] and sp.get("sparser_basis", sparser_basis(sp)) == ref["sparser_basis"]


def test_multiplication_gets_spectra_in_both_bases(tmp_path, capsys):
    p = 11
    run = _tiny_run(tmp_path, **{"task.formula": "a*b", "task.p": p})
    data, out = _analyze(run, capsys)
    sp = data["zoo"]["spectra"]
    _assert_spectra_match(sp, _spectra_reference(run.load_model().W_E, p))
    assert len(sp["norms_add"]) == (p - 1) // 2 and len(sp["norms_log"]) == (p - 1) // 2 - 1 and sp["generator"] == 2
    assert "key_frequencies" in data  # the Fourier analysis still runs on the full grid
    assert "additive basis" in out and "discrete-log basis (g = 2)" in out


def test_division_is_analysed_in_both_bases_and_says_what_it_skips(tmp_path, capsys):
    run = _tiny_run(tmp_path, **{"task.formula": "a/b", "task.p": 11})
    data, out = _analyze(run, capsys)
    # Its own basis is the discrete-log one, which needs no division-by-zero pair: the whole analysis runs there
    # (tests/test_bases.py), the spectra in both bases beside it.
    assert data["basis"]["name"] == "dlog" and data["basis"]["n"] == 10 and "key_frequencies" in data
    assert "spectra" in data["zoo"] and "basis:      dlog over Z_10" in out and "discrete-log basis" in out
    # Asked for in the additive basis, the zoo analyses stand in and say what the missing full grid rules out.
    assert main(["analyze", str(run.dir), "--basis", "additive"]) == 0
    data, out = json.loads((run.dir / "analysis.json").read_text()), capsys.readouterr().out
    zoo = data["zoo"]
    assert "spectra" in zoo and "key_frequencies" not in data
    assert "division by zero" in zoo["skipped"]["Fourier analysis and progress measures"]
    logged = run.metrics.loc[4]
    assert zoo["scores"]["test_acc"] == pytest.approx(logged["test_acc"]) and zoo["scores"][
        "train_loss"
    ] == pytest.approx(logged["train_loss"], rel=1e-6)
    assert "not computed" in out and "discrete-log basis" in out


def test_subtraction_gets_operand_asymmetry_and_addition_does_not(tmp_path, capsys):
    p = 11
    sub = _tiny_run(tmp_path, "sub", **{"task.formula": "a-b", "task.p": p})
    data, out = _analyze(sub, capsys)
    model, task = sub.load_model(), sub.task()
    _, cache = model.run_with_cache(task.tokens)
    # by the definition, in numpy: rows (a, b) in grid order (a slow), centred; the row of (b, a) for each (a, b)
    X = cache["blocks.0.mlp.hook_post"][:, -1].detach().to(torch.float64).numpy()
    X = X - X.mean(axis=0)
    swapped = X[[b * p + a for a in range(p) for b in range(p)]]
    total = float((X**2).sum())
    by_a = np.repeat(X.reshape(p, p, -1).mean(axis=1), p, axis=0)  # each row replaced by the mean of its a-row
    by_b = np.tile(X.reshape(p, p, -1).mean(axis=0), (p, 1))  # ... of its b-column
    got = data["zoo"]["asymmetry"]
    assert got["asymmetry"] == pytest.approx(math.sqrt(float(((X - swapped) ** 2).sum()) / total), rel=1e-9)
    assert got["energy_a"] == pytest.approx(float((by_a**2).sum()) / total, rel=1e-9)
    assert got["energy_b"] == pytest.approx(float((by_b**2).sum()) / total, rel=1e-9)
    assert 0.05 < got["asymmetry"]  # subtraction is not symmetric: the check above is not of a zero
    assert "operand asymmetry" in out
    add, _ = _analyze(_tiny_run(tmp_path, "add", **{"task.p": p}), capsys)
    assert add["zoo"] == {"kind": "modular"}


def test_sparse_parity_gets_neuron_bits(tmp_path, capsys):
    run = _tiny_run(
        tmp_path,
        preset="pair-sparse-parity",
        **{"task.n_bits": 8, "task.n_examples": 120, "task.n_train": 80, "model.d_mlp": 8},
    )
    data, out = _analyze(run, capsys)
    neurons = data["zoo"]["parity_neurons"]
    assert (
        neurons
        and all(set(n) == {"neuron", "strength", "bits"} for n in neurons)
        and data["zoo"]["parity_bits"] == [0, 1, 2]
    )
    assert "surviving neurons" in out


def test_digit_addition_gets_per_position_scores(tmp_path, capsys):
    o = {
        "task.n_digits": 2,
        "task.n_examples": 60,
        "task.n_train": 40,
        "model.d_model": 16,
        "model.n_heads": 2,
        "model.d_head": 8,
        "model.d_mlp": 32,
    }
    run = _tiny_run(tmp_path, preset="nanda-d3-addition", **o)
    data, out = _analyze(run, capsys)
    scores, logged = data["zoo"]["scores"], run.metrics.loc[4]
    for key in ("test_loss", "test_acc", "test_seq_acc", "train_loss_ans0", "test_acc_ans2"):
        assert scores[key] == pytest.approx(logged[key], rel=1e-6), key
    assert data["phases"] is not None and "ans2" in out and "whole-sequence acc" in out


# (formula as Python, sum_only, product_only, separable, symmetric): what each table is made of, by algebra
STRUCTURES = {
    "a+b": (lambda a, b: a + b, True, False, True, True),
    "a*b": (lambda a, b: a * b, False, True, False, True),
    "(a+b)^2": (lambda a, b: (a + b) ** 2, True, False, False, True),
    "a^2+b^2": (lambda a, b: a * a + b * b, False, False, True, True),
    "a-b": (lambda a, b: a - b, False, False, True, False),
    "2a+3b": (lambda a, b: 2 * a + 3 * b, False, False, True, False),
    "a^2+ab+b^2": (lambda a, b: a * a + a * b + b * b, False, False, False, True),
    "ab+a+b": (lambda a, b: a * b + a + b, False, False, False, True),
    "a^3+ab": (lambda a, b: a**3 + a * b, False, False, False, False),
}


@pytest.mark.parametrize("name", list(STRUCTURES))
def test_task_structure_matches_the_algebra(name):
    p = 13
    f, sum_only, product_only, separable, symmetric = STRUCTURES[name]
    table = torch.tensor([[f(a, b) % p for b in range(p)] for a in range(p)])
    got = task_structure(table, p)
    assert got.pop("product_shift") == (1 if name == "ab+a+b" else 0 if product_only else None)  # ab+a+b = (a+1)(b+1)-1
    assert got == {"sum_only": sum_only, "product_only": product_only, "separable": separable, "symmetric": symmetric}


def test_sparser_basis_finds_the_basis_an_embedding_was_built_in():
    p, d = 13, 8
    g = 2  # a primitive root mod 13
    a = torch.arange(p, dtype=torch.float64)
    additive = torch.stack([torch.cos(2 * math.pi * 3 * a / p + j) for j in range(d)], dim=1)  # one frequency, k = 3
    log_a = torch.zeros(p, dtype=torch.float64)
    for i in range(p - 1):
        log_a[pow(g, i, p)] = i
    multiplicative = torch.stack([torch.cos(2 * math.pi * 2 * log_a / (p - 1) + j) for j in range(d)], dim=1)
    multiplicative[0] = 0.0  # token 0 sits outside Z_p^*
    assert sparser_basis(spectra_both_bases(additive, p)) == "additive"
    assert sparser_basis(spectra_both_bases(multiplicative, p)) == "discrete-log"
    noise = torch.randn(p, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert sparser_basis(spectra_both_bases(noise, p)) == "neither"
    # the numbers behind the verdicts, against the numpy reference (sparse spectra: FFS and FCR over a few used
    # frequencies)
    for w in (additive, multiplicative, noise, additive + 0.3 * multiplicative):
        _assert_spectra_match(spectra_both_bases(w, p), _spectra_reference(w, p))


def test_a_polynomial_gets_spectra_and_its_structure(tmp_path, capsys):
    p = 11
    run = _tiny_run(tmp_path, **{"task.formula": "a^2+b^2", "task.p": p})
    data, out = _analyze(run, capsys)
    zoo = data["zoo"]
    assert zoo["structure"] == {
        "sum_only": False,
        "product_only": False,
        "product_shift": None,
        "separable": True,
        "symmetric": True,
    }
    _assert_spectra_match(zoo["spectra"], _spectra_reference(run.load_model().W_E, p))
    assert "task structure: g(a) + h(b), symmetric in a, b" in out and "sparser basis:" in out


def test_the_shifted_log_basis_makes_a_shifted_product_embedding_sparse():
    p, d, c = 13, 8, 1
    log_u = torch.zeros(p, dtype=torch.float64)
    for i in range(p - 1):
        log_u[pow(2, i, p)] = i
    u = (torch.arange(p) + c) % p  # token t is read as u = t + c
    w = torch.stack([torch.cos(2 * math.pi * 2 * log_u[u] / (p - 1) + j) for j in range(d)], dim=1)
    w[u == 0] = 0.0
    assert sparser_basis(spectra_both_bases(w, p)) != "discrete-log"
    shifted = spectra_both_bases(w, p, shift=c)
    assert shifted["shift"] == c and sparser_basis(shifted) == "discrete-log" and shifted["top_log"][0] == 2
