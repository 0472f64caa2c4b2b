"""Division in its own basis (issue 21): a constructed a/b network that uses the Nyquist frequency n/2 (the Legendre
symbol, which a trained a/b mod 53 uses), and the excluded loss of an exact network (chance over the n group
outputs, ln n, which is below ln p)."""

import math

import pytest

from grokscope.analysis import analyze_in_basis
from grokscope.analysis.construct import group_network
from grokscope.config import TaskConfig
from grokscope.tasks import make_task


@pytest.mark.parametrize(("p", "freqs"), [(13, [1, 6]), (13, [2, 3, 6]), (29, [5, 14])])
def test_division_network_with_nyquist_is_found_exactly(p, freqs):
    model, basis = group_network("a/b", p, freqs)
    assert basis.n == p - 1 and max(freqs) == basis.n // 2  # the Nyquist frequency is a key frequency
    a = analyze_in_basis(model, make_task(TaskConfig(formula="a/b", p=p, train_fraction=0.5)))
    assert a.basis["name"] == "dlog"
    for rule in ("W_L_dft", "W_L_online", "W_E_norm", "logits_dft"):
        assert a.key_frequencies_by_rule[rule] == freqs, rule
    assert a.key_frequencies == freqs
    assert a.logit_fit.fve >= 0.99
    assert a.W_L_residual_fraction < 1e-6
    assert a.losses["restricted_loss"] == pytest.approx(a.losses["test_loss"], rel=1e-6)  # nothing to remove
    # the Nyquist neurons (x +- y)^2 of (-1)^i and (-1)^j sit wholly in the {0, n/2}^2 block
    assert a.neurons.n_explained == 2


@pytest.mark.parametrize("formula", ["a/b", "a*b"])
def test_exact_network_excluded_loss_is_ln_n_not_above_ln_p(formula):
    """With no residue outside the key waves, removing them leaves constant logits over the n group outputs: the
    loss is ln n exactly, below ln p. A trained network is above ln p only through its non-key residue."""
    p = 13
    model, _ = group_network(formula, p, [2, 5])
    a = analyze_in_basis(model, make_task(TaskConfig(formula=formula, p=p, train_fraction=0.5)))
    assert a.losses["excluded_loss"] == pytest.approx(math.log(p - 1), abs=1e-6)
    assert a.losses["excluded_loss"] < math.log(p)


def test_construct_rejects_frequencies_past_nyquist():
    with pytest.raises(ValueError, match=r"frequencies must be in 1\.\.6"):
        group_network("a/b", 13, [7])
