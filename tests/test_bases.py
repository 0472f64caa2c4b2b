"""Group bases (issue 21): the basis found from a task's table, the relabelling identity on every input, the Fourier
helpers over Z_n for even n, and the Section 4 analysis in the basis on constructed networks with known answers."""

import json
import math

import pytest
import torch

from grokscope.analysis import analyze_checkpoint, logit_wave_fit
from grokscope.analysis.basis import analyze_group, analyze_in_basis, basis_summary
from grokscope.analysis.construct import group_network, quadratic_mlp_addition
from grokscope.analysis.reverse import (
    block_mask_table,
    grid_attention_fits,
    grid_ffs_fcr,
    neuron_polynomial_fits,
    star_from_weights,
)
from grokscope.config import ModelConfig, TaskConfig
from grokscope.measures import (
    MeasureError,
    ffs_fcr,
    frequency_norms,
    label_wave_fit,
    primitive_root,
    real_fourier_basis,
)
from grokscope.measures.bases import (
    basis_table,
    detect_basis,
    formula_table,
    frequency_rows,
    group_basis_for,
    group_block_fractions,
    group_frequency_norms,
    group_label_wave_fit,
    group_neuron_energy,
    task_basis,
)
from grokscope.models import build_model
from grokscope.tasks import make_task

# formula -> (basis name, shift, exact); None: no group basis
EXPECTED = {
    "a+b": ("additive", 0, True),
    "a-b": ("additive", 0, True),
    "2*a+3*b+1": ("additive", 0, True),
    "b-a": ("additive", 0, True),
    "a^3+b": ("additive", 0, True),  # p = 53: gcd(3, 52) = 1, so a^3 is a bijection
    "a*b": ("dlog", 0, True),
    "a/b": ("dlog", 0, True),
    "b/a": ("dlog", 0, True),
    "3*a*b": ("dlog", 0, True),
    "5*a/b": ("dlog", 0, True),
    "a*b+a+b": ("dlog", 1, True),
    "(a+2)*(b+5)-1": ("dlog", 1, True),
    "a*b+a": ("dlog", 0, True),
    "a*b+a+b+1": ("dlog", 0, True),
    "a^2+b": ("additive", 0, False),
    "a^2+b^2": ("additive", 0, False),
    "a^2*b": ("dlog", 0, False),
    "a^2+a*b+b^2": None,
    "a^3+a*b": None,
    "a-b if b is odd else a/b": None,
}
P = 53


def _identity_holds(table, basis):
    i = torch.arange(basis.n)
    return torch.equal(table[basis.a_order[:, None], basis.b_order[None, :]], basis.c_order[(i[:, None] + i) % basis.n])


@pytest.mark.parametrize("formula", sorted(EXPECTED))
def test_basis_detected_from_the_table(formula):
    table = formula_table(formula, P)
    basis, why = detect_basis(table, P)
    want = EXPECTED[formula]
    if want is None:
        assert basis is None and why.startswith("t is neither a sum")
        return
    name, shift, exact = want
    assert (basis.name, basis.shift, basis.exact) == (name, shift, exact), why
    assert basis.n == (P if name == "additive" else P - 1)
    assert basis.why == why and why
    for order in (basis.a_order, basis.b_order, basis.c_order):
        assert sorted(order.tolist()) == sorted(set(order.tolist())) and len(order) == basis.n  # distinct
    # The relabelling identity on every group input, exactly when the basis is exact.
    assert _identity_holds(table, basis) == exact
    if name == "dlog":
        assert basis.generator == primitive_root(P) and "outside the group" in basis.outside
        # Every input outside the group is accounted for: a = a0 or b = b0.
        inside = torch.zeros(P, P, dtype=torch.bool)
        inside[basis.a_order[:, None], basis.b_order[None, :]] = True
        assert int((~inside).sum()) == 2 * P - 1


def test_basis_specifics():
    mul, _ = detect_basis(formula_table("a*b", P), P)
    g = primitive_root(P)
    assert mul.a_order.tolist() == [pow(g, i, P) for i in range(P - 1)] == mul.c_order.tolist()
    div, _ = detect_basis(formula_table("a/b", P), P)
    assert div.b_order.tolist() == [pow(g, -i, P) for i in range(P - 1)]  # b's group element j is g^-j
    assert "no answer for b = 0" in div.outside
    shifted, _ = detect_basis(formula_table("a*b+a+b", P), P)
    assert shifted.c_order.tolist() == [(pow(g, i, P) - 1) % P for i in range(P - 1)]
    assert shifted.outside.startswith(f"a = {P - 1} or b = {P - 1}")
    sub, _ = detect_basis(formula_table("a-b", P), P)
    assert sub.b_order.tolist() == [(-j) % P for j in range(P)] and "a + 52b" in sub.why
    square, why = detect_basis(formula_table("a^2+b", P), P)
    assert "f(a) is not a bijection" in why and square.a_order.tolist() == list(range(P))
    # composite p: no discrete-log basis, the additive one still exists
    assert detect_basis(formula_table("a*b", 15), 15)[0] is None
    assert "not prime" in detect_basis(formula_table("a*b", 15), 15)[1]
    assert detect_basis(formula_table("a+b", 15), 15)[0].n == 15


def test_basis_by_name():
    table = formula_table("a*b", 13)
    forced, why = group_basis_for(table, 13, "additive")
    assert forced.name == "additive" and not forced.exact and "not a sum" in why
    found, why = group_basis_for(table, 13, "dlog")
    assert found.exact and why.endswith("(asked for: dlog)")
    with pytest.raises(MeasureError, match="no answer in Z_p"):
        group_basis_for(formula_table("a+b", 13), 13, "dlog")  # a + b = 0 for a, b != 0
    with pytest.raises(MeasureError, match="unknown basis"):
        group_basis_for(table, 13, "s5")
    assert group_basis_for(formula_table("a^2*b^2", 13), 13, "dlog")[0].name == "dlog"


def test_task_table_is_the_formula_table():
    for formula in ("a*b", "a/b", "a*b+a+b"):
        task = make_task(TaskConfig(formula=formula, p=13, train_fraction=0.5))
        assert torch.equal(basis_table(task), formula_table(formula, 13))
        assert task_basis(task)[0].name == "dlog"


# ----------------------------------------------------------------------------- Fourier over Z_n, even n


def test_group_helpers_on_odd_n_are_the_additive_ones():
    x = torch.randn(13, 7, dtype=torch.float64)
    assert torch.equal(group_frequency_norms(x, 0), frequency_norms(x, 0))
    table, labels = torch.randn(169, 13, dtype=torch.float64), torch.randint(0, 13, (169,))
    for a, b in zip(group_label_wave_fit(table, labels, 13, [2, 5]), label_wave_fit(table, labels, 13, [2, 5])):
        assert torch.allclose(a, b, atol=1e-12)
    w_e = torch.randn(13, 5, dtype=torch.float64)
    assert grid_ffs_fcr(w_e) == ffs_fcr(w_e)  # bit for bit: the analysis over Z_13 is the Z_p one


def test_logit_fit_over_odd_and_even_n_is_the_least_squares_fit():
    """alpha_k against an independent dense least-squares fit of the row-centred table on the waves cos(w_k(s - c)),
    for odd n and for even n with the Nyquist wave (-1)^(s - c) among them."""
    torch.manual_seed(1)
    for n, freqs in ((13, [1, 4]), (12, [2, 6])):
        i = torch.arange(n * n)
        labels = (i // n + i % n) % n
        table = torch.randn(n * n, n, dtype=torch.float64)
        centred = table - table.mean(dim=1, keepdim=True)
        d = (labels[:, None] - torch.arange(n)[None, :]).to(torch.float64)
        design = torch.stack([torch.cos(2 * math.pi * k * d / n).reshape(-1) for k in freqs], dim=1)
        coef = torch.linalg.lstsq(design, centred.reshape(-1, 1)).solution.reshape(-1)
        fit = logit_wave_fit(table, labels, n, freqs)
        assert [fit.alpha[k] for k in freqs] == pytest.approx(coef.tolist(), abs=1e-12)
        resid = centred.reshape(-1) - design @ coef
        assert fit.fve == pytest.approx(1 - float(resid @ resid) / float((centred**2).sum()), abs=1e-12)
        if n % 2 == 0:
            assert fit.sin_coefficient[6] == 0.0  # the Nyquist wave has no sine


def test_the_pieces_take_the_nyquist_frequency_of_an_even_n():
    """Over Z_12 the wave (-1)^x is frequency 6: the block masks keep it, a neuron on it is fitted by it, a head
    attending by it is fitted at 6, a star-plot neuron reads it (sine 0), and FFS counts it while FCR does not."""
    n = 12
    x = torch.arange(n, dtype=torch.float64)
    nyq, wave1 = torch.cos(math.pi * x), torch.cos(2 * math.pi * x / n)
    table = (nyq[:, None] * nyq[None, :] + wave1[:, None]).reshape(n * n, 1)  # (-1)^(i+j) + cos(w_1 i)
    kept = block_mask_table(table, n, [6], product_only=True)
    assert torch.allclose(kept, (nyq[:, None] * nyq[None, :]).reshape(-1, 1), atol=1e-12)
    kept = block_mask_table(table, n, [1, 6], product_only=False)
    assert torch.allclose(kept, table, atol=1e-12)
    acts = torch.cat([table, torch.randn(n * n, 1, dtype=torch.float64)], dim=1)
    fitted = neuron_polynomial_fits(acts, n, torch.tensor([6, 6]), torch.tensor([True, False]))
    assert torch.allclose(fitted[:, 0], (nyq[:, None] * nyq[None, :]).reshape(-1), atol=1e-12)
    assert torch.equal(fitted[:, 1], acts[:, 1])
    pattern = (0.5 + 0.25 * nyq[:, None]).expand(n, n).reshape(n * n, 1)  # attention by (-1)^i
    (head,) = grid_attention_fits([pattern], n)
    assert (head.frequency, head.mean) == (6, pytest.approx(0.5)) and head.fve == pytest.approx(1.0)
    w_e = torch.stack([nyq, wave1], dim=1)  # [n, d_model = 2]
    (star,) = star_from_weights(w_e, torch.tensor([[-2.0], [0.0]], dtype=torch.float64), nyq[None, :])
    assert star.frequency == 6 and star.sin_in == 0.0 and star.sin_out == 0.0
    assert star.cos_in == pytest.approx(-2 * math.sqrt(n)) and star.angle_in == pytest.approx(math.pi)
    assert star.cos_out == pytest.approx(math.sqrt(n)) and star.angle_out == 0.0
    ffs, fcr = grid_ffs_fcr(w_e)
    # frequencies 1 and 6 used; frequency 1 is a cosine alone, so its sine/cosine ratio is 0
    assert ffs == pytest.approx(2 / 6) and fcr == pytest.approx(0.0, abs=1e-12)


def test_even_n_nyquist_frequency():
    n = 12
    assert frequency_rows(6, n) == [11] and frequency_rows(2, n) == [3, 4]
    x = torch.arange(n, dtype=torch.float64)
    signs = torch.cos(math.pi * x)[:, None]  # (-1)^x: all its energy at the Nyquist frequency 6
    norms = group_frequency_norms(signs, 0)
    assert norms.shape == (6,) and norms[:5].abs().max() < 1e-12 and norms[5] == pytest.approx(math.sqrt(n))
    assert torch.allclose(real_fourier_basis(n) @ real_fourier_basis(n).T, torch.eye(n, dtype=torch.float64))
    # A neuron (-1)^i * (-1)^j lies in the Nyquist block; the label fit with the Nyquist cosine is not singular.
    acts = (signs * signs.T).reshape(n * n, 1)
    fracs = group_block_fractions(group_neuron_energy(acts, n), n, quadratic=False)
    assert fracs[5, 0] == pytest.approx(1.0) and fracs[:5].abs().max() < 1e-12
    i = torch.arange(n * n)
    labels = (i // n + i % n) % n
    table = 3 * torch.cos(math.pi * (labels[:, None] - torch.arange(n)[None, :]).to(torch.float64))
    const, key = group_label_wave_fit(table, labels, n, [6])
    assert torch.allclose(const + key, table[torch.argsort(labels)[::n]], atol=1e-10)
    fit = logit_wave_fit(table, labels, n, [6])
    assert fit.fve == pytest.approx(1.0) and fit.alpha[6] == pytest.approx(3.0) and fit.sin_coefficient[6] == 0.0


# ----------------------------------------------------------------------------- constructed networks


@pytest.mark.parametrize(
    ("formula", "p", "freqs"),
    [
        ("a*b", 13, [1, 5]),  # n = 12
        ("a/b", 13, [2, 5]),
        ("a*b+a+b", 13, [1, 5]),
        ("a*b", 29, [3, 9, 13]),  # n = 28: 2 * 7 = 14 is the Nyquist frequency, harmonic of none of these
        ("a/b", 29, [5, 11]),
    ],
)
def test_constructed_group_network_is_analysed_to_its_frequencies(formula, p, freqs):
    model, basis = group_network(formula, p, freqs)
    task = make_task(TaskConfig(formula=formula, p=p, train_fraction=0.5, split_seed=0))
    a = analyze_in_basis(model, task)
    assert a.basis["name"] == "dlog" and a.basis["n"] == p - 1 and a.basis["exact"]
    assert a.basis["shift"] == (1 if formula == "a*b+a+b" else 0)
    assert a.key_frequencies == freqs and a.key_freq_rule == "W_L_dft"
    for rule in ("W_L_dft", "W_L_online", "W_E_norm", "logits_dft"):
        assert a.key_frequencies_by_rule[rule] == freqs, rule
    assert a.logit_fit.fve >= 0.99
    assert a.losses["acc"] == 1.0 and a.losses["restricted_acc"] == 1.0
    assert a.W_L_residual_fraction < 1e-6
    # Every neuron is (u +- v)^2 of one chosen frequency: 100% with the squares, 0.8 in the 3x3 block.
    assert a.neurons.frequency == [k for k in freqs for _ in range(8)]
    assert a.neurons.n_explained_quadratic == a.neurons.n_neurons == 8 * len(freqs)
    assert a.neurons.fve == pytest.approx([0.8] * (8 * len(freqs)), abs=1e-4)
    removed = next(r for r in a.ablations if r.name == "remove all key freqs")
    assert removed.loss > 0.9 * math.log(p - 1)  # nothing left but the (removed) key waves
    restricted = next(r for r in a.ablations if r.name == "keep only key freqs (restricted)")
    assert restricted.loss == pytest.approx(a.losses["loss"], rel=1e-3)
    json.dumps(a.to_dict())


def test_analysis_in_basis_outside_inputs_and_model_losses():
    model, _ = group_network("a*b", 13, [1, 5])
    task = make_task(TaskConfig(formula="a*b", p=13, train_fraction=0.5, split_seed=0))
    a = analyze_in_basis(model, task, step=7)
    own = a.basis["model"]
    assert own["n_outside"] == 2 * 13 - 1  # a = 0 or b = 0
    assert a.step == 7 and a.p == 13 and len(a.W_E_frequency_norms) == 6 and len(a.W_E_component_norms) == 12
    assert "group's n outputs" in a.basis["softmax"]
    assert "dlog over Z_12, generator g = 2" in basis_summary(a.basis)
    with pytest.raises(MeasureError, match="no answer in Z_p"):
        analyze_in_basis(model, make_task(TaskConfig(formula="a+b", p=13)), basis="dlog")


# ----------------------------------------------------------------------------- addition unchanged


def test_addition_is_the_additive_analysis_bit_for_bit():
    task = make_task(TaskConfig(p=13, train_fraction=0.3))
    model = quadratic_mlp_addition(13, [2, 5], scale=2.0)
    ref = analyze_checkpoint(model, task).to_dict()
    got = analyze_in_basis(model, task).to_dict()
    basis = got.pop("basis")
    assert json.dumps(got, sort_keys=True) == json.dumps(ref, sort_keys=True)
    assert basis["name"] == "additive" and basis["exact"] and basis["n"] == 13


def _close(x, y, path=""):
    if isinstance(x, dict):
        assert set(x) == set(y), path
        for k in x:
            _close(x[k], y[k], f"{path}.{k}")
    elif isinstance(x, list):
        assert len(x) == len(y), path
        for i, (u, v) in enumerate(zip(x, y)):
            _close(u, v, f"{path}[{i}]")
    elif isinstance(x, float):
        assert y == pytest.approx(x, rel=1e-6, abs=1e-9), path
    else:
        assert x == y, path


@pytest.mark.parametrize("arch", ["mlp", "transformer"])
def test_general_path_on_the_identity_basis_reproduces_the_additive_analysis(arch):
    """The analysis over Z_n run on a+b's identity relabelling gives the additive analysis' numbers (to rounding):
    the general code is the additive code with n for p."""
    task = make_task(TaskConfig(p=13, train_fraction=0.3))
    if arch == "mlp":
        model = quadratic_mlp_addition(13, [2, 5], scale=2.0)
    else:
        cfg = ModelConfig(arch="transformer", d_model=16, n_heads=2, d_head=8, d_mlp=32, init_seed=3)
        model = build_model(cfg, d_vocab=14, d_vocab_out=13, n_ctx=3).eval()
    basis, _ = task_basis(task)
    ref = analyze_checkpoint(model, task, key_freqs=[2, 5]).to_dict()
    got = analyze_group(model, task, basis, key_freqs=[2, 5]).to_dict()
    got.pop("basis")
    _close(ref, got)


def test_render_names_the_basis():
    from grokscope.analysis import render_analysis, render_summary

    model, _ = group_network("a/b", 13, [2, 5])
    a = analyze_in_basis(model, make_task(TaskConfig(formula="a/b", p=13, train_fraction=0.5)))
    text = render_analysis(a)
    assert "basis:      dlog over Z_12, generator g = 2" in text and "no answer for b = 0" in text
    assert "restricted loss (all 12^2 group inputs)" in text and "cos(w_k(i+j-m))" in text
    assert "the model's own (all p classes)" in text
    assert "basis:      dlog" in render_summary(a)
    plain = analyze_checkpoint(quadratic_mlp_addition(13, [2, 5]), make_task(TaskConfig(p=13)))
    assert "basis:" not in render_analysis(plain) and "loss (all p^2)" in render_analysis(plain)
