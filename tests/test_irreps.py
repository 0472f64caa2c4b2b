"""S5 in its irreducible representations (issue 21, item 3): the irreps checked against the group laws and the
textbook character table, and the analysis checked on constructed networks whose irreps are chosen."""

import itertools
import json
import math

import pytest
import torch

from grokscope.analysis.construct import s5_irrep_transformer
from grokscope.analysis.irreps import gcr_fit, irrep_analysis, irrep_logit_analysis, key_irreps
from grokscope.analysis.zoo import render_zoo, zoo_analysis
from grokscope.config import TaskConfig
from grokscope.measures.irreps import (
    IRREP_DIMS,
    IRREP_NAMES,
    character_table,
    irrep_basis,
    irrep_energy,
    permutation_matrices,
    project_irreps,
    s5_irreps,
)
from grokscope.tasks.zoo import S5_PERMUTATIONS, make_s5_task, s5_table

# The character table of S5 from the literature (e.g. Fulton & Harris, section 3.1), by cycle type.
CYCLE_TYPES = ((1, 1, 1, 1, 1), (2, 1, 1, 1), (2, 2, 1), (3, 1, 1), (3, 2), (4, 1), (5,))
TEXTBOOK = {
    "[5]": (1, 1, 1, 1, 1, 1, 1),
    "[1^5]": (1, -1, 1, 1, -1, -1, 1),
    "[4,1]": (4, 2, 0, 1, -1, 0, -1),
    "[2,1^3]": (4, -2, 0, 1, 1, 0, -1),
    "[3,2]": (5, 1, 1, -1, 1, -1, 0),
    "[2^2,1]": (5, -1, 1, -1, -1, 1, 0),
    "[3,1^2]": (6, 0, -2, 0, 0, 0, 1),
}


def _cycle_type(perm: tuple[int, ...]) -> tuple[int, ...]:
    seen, lengths = set(), []
    for start in range(5):
        n, i = 0, start
        while i not in seen:
            seen.add(i)
            i, n = perm[i], n + 1
        if n:
            lengths.append(n)
    return tuple(sorted(lengths, reverse=True))


def test_seven_irreps_of_the_right_dimensions_fill_the_group_algebra():
    reps = s5_irreps()
    assert list(reps) == list(IRREP_NAMES)
    assert [r.shape[1] for r in reps.values()] == [1, 1, 4, 4, 5, 5, 6] == list(IRREP_DIMS.values())
    assert sum(d * d for d in IRREP_DIMS.values()) == 120


@pytest.mark.parametrize("name", IRREP_NAMES)
def test_each_irrep_is_an_orthogonal_homomorphism_in_the_task_order(name):
    rho = s5_irreps()[name]
    xy = s5_table("x*y")  # the task's own product, (x*y)(i) = x(y(i))
    assert torch.allclose(rho[:, None] @ rho[None, :], rho[xy], atol=1e-12)
    eye = torch.eye(rho.shape[1], dtype=torch.float64)
    assert torch.allclose(rho @ rho.transpose(1, 2), eye.expand_as(rho), atol=1e-12)
    assert torch.allclose(rho[0], eye)  # token 0 is the identity


def test_characters_match_the_textbook_table_and_are_orthonormal():
    types = [_cycle_type(p) for p in S5_PERMUTATIONS]
    chars = {}
    for name, rho in s5_irreps().items():
        chi = torch.einsum("gii->g", rho)
        expected = torch.tensor([TEXTBOOK[name][CYCLE_TYPES.index(t)] for t in types], dtype=torch.float64)
        assert torch.allclose(chi, expected, atol=1e-10), name
        chars[name] = chi
    stacked = torch.stack(list(chars.values()))
    assert torch.allclose(stacked @ stacked.T / 120, torch.eye(7, dtype=torch.float64), atol=1e-12)


def test_permutation_matrices_follow_the_task_order_and_product():
    m = permutation_matrices()
    for g, perm in enumerate(S5_PERMUTATIONS[:10]):
        for i in range(5):
            assert m[g, perm[i], i] == 1.0
    xy = s5_table("x*y")
    assert torch.equal(m[:, None] @ m[None, :], m[xy])


def test_the_matrix_elements_are_an_orthonormal_basis_and_energy_splits_by_irrep():
    b, labels = irrep_basis()
    assert torch.allclose(b @ b.T, torch.eye(120, dtype=torch.float64), atol=1e-12)
    assert [int((labels == i).sum()) for i in range(7)] == [d * d for d in IRREP_DIMS.values()]
    rho = s5_irreps()["[3,2]"]
    f = torch.stack([rho[:, 0, 1], 2 * rho[:, 3, 4]], dim=1)  # two matrix elements of [3,2]
    energy = irrep_energy(f)
    assert energy["[3,2]"] == pytest.approx(1.0) and sum(energy.values()) == pytest.approx(1.0)
    mixed = f + s5_irreps()["[1^5]"][:, 0, :]
    assert torch.allclose(project_irreps(mixed, ["[3,2]"]), f, atol=1e-12)
    assert torch.allclose(project_irreps(mixed, list(IRREP_NAMES)), mixed, atol=1e-12)
    assert irrep_energy(torch.zeros(120, 3)) == dict.fromkeys(IRREP_NAMES, 0.0)
    with pytest.raises(ValueError, match="unknown irreps"):
        project_irreps(f, ["[6]"])


def test_gcr_fit_recovers_chosen_weights_from_characters():
    targets = torch.arange(120).repeat(3)
    weights = {"[2,1^3]": 1.5, "[3,1^2]": -0.25}
    logits = sum(w * character_table(n)[targets] for n, w in weights.items()) + 7.0  # a constant shift is free
    fitted, fve = gcr_fit(logits, targets, list(weights))
    assert fitted == pytest.approx(weights) and fve == pytest.approx(1.0)
    _, fve_wrong = gcr_fit(logits, targets, ["[4,1]"])
    assert fve_wrong == pytest.approx(0.0, abs=1e-12)
    assert gcr_fit(logits, targets, []) == ({}, 0.0)


def test_key_irreps_leave_out_the_trivial_one_and_small_shares():
    energy = dict.fromkeys(IRREP_NAMES, 0.0) | {"[5]": 0.5, "[4,1]": 0.46, "[3,2]": 0.04}
    assert key_irreps(energy) == ["[4,1]"]


S5_TASK = make_s5_task(TaskConfig(kind="s5", formula="x*y", train_fraction=0.5))


@pytest.mark.parametrize("chosen", [["[4,1]", "[3,1^2]"], ["[2,1^3]", "[3,2]"], ["[2^2,1]"]])
def test_the_analysis_finds_exactly_the_irreps_a_network_was_built_from(chosen):
    model = s5_irrep_transformer(chosen)
    r = irrep_analysis(model, S5_TASK)
    ordered = [n for n in IRREP_NAMES if n in chosen]
    assert r["key_irreps"] == r["embed_keys"] == r["unembed_keys"] == ordered
    assert sum(r["logit_energy"][n] for n in chosen) == pytest.approx(1.0, abs=1e-9)
    assert r["gcr_fve"] >= 0.99
    # the logits are sum_rho d_rho chi_rho(x y c^-1): the fit returns the weights d_rho
    assert r["gcr_weights"] == pytest.approx({n: IRREP_DIMS[n] for n in ordered}, rel=1e-5)
    assert r["restricted_loss"] <= r["loss"] + 1e-6
    assert r["excluded_loss"] == pytest.approx(math.log(120), abs=1e-6)  # nothing left: uniform logits
    with torch.no_grad():
        assert torch.equal(model(S5_TASK.tokens).argmax(-1), S5_TASK.labels)


def test_random_logits_spread_over_all_irreps_and_defeat_the_fit():
    """Random logits use every irrep about in proportion to d^2, and the GCR fit explains almost nothing."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2000, 120, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 120, (2000,), generator=gen)
    w_e, w_u = torch.randn(120, 16, generator=gen), torch.randn(16, 120, generator=gen)
    r = irrep_logit_analysis(logits, labels, w_e, w_u)
    for n, d in IRREP_DIMS.items():
        if n != "[5]":
            assert r["logit_energy"][n] == pytest.approx(d * d / 119, abs=0.02)
    assert r["gcr_fve"] < 0.01


def test_zoo_analysis_of_an_s5_network_reports_its_irreps():
    model = s5_irrep_transformer(["[4,1]", "[3,1^2]"])
    z = zoo_analysis(model, S5_TASK)
    json.dumps(z)
    assert z["irreps"]["key_irreps"] == ["[4,1]", "[3,1^2]"] and z["scores"]["test_acc"] == 1.0
    text = render_zoo(z)
    assert "S5 irreps" in text and "GCR logit fit FVE 1.0000" in text and "key irreps ['[4,1]', '[3,1^2]']" in text


def test_the_construction_refuses_unknown_irreps():
    for bad in ([], ["[6]"]):
        with pytest.raises(ValueError, match="irreps must be"):
            s5_irrep_transformer(bad)


def test_all_pairs_of_distinct_irreps_have_orthogonal_characters_over_the_output():
    for u, v in itertools.combinations(IRREP_NAMES, 2):
        assert float((character_table(u) * character_table(v)).sum()) == pytest.approx(0.0, abs=1e-8)


def test_grokscope_analyze_on_an_s5_run_reports_the_irreps(tmp_path, capsys):
    from grokscope.cli import main
    from grokscope.config import apply_overrides
    from grokscope.presets import get_preset
    from grokscope.training import loop

    o = {"train.epochs": 2, "train.log_every": 1, "train.measure_every": 0, "train.checkpoint_every": 1,
         "train.batch_size": 2048, "model.n_layers": 1, "model.d_model": 16, "model.n_heads": 2, "model.d_head": 8,
         "model.d_mlp": 32}
    run = loop.train(apply_overrides(get_preset("power-s5-xy"), o), tmp_path / "run", progress=False)
    assert main(["analyze", str(run.dir)]) == 0
    out = capsys.readouterr().out
    irreps = json.loads((run.dir / "analysis.json").read_text())["zoo"]["irreps"]
    assert set(irreps["embed_energy"]) == set(IRREP_NAMES) and sum(irreps["embed_energy"].values()) == pytest.approx(1)
    assert 0 <= irreps["gcr_fve"] <= 1 and math.isfinite(irreps["restricted_loss"])
    assert "S5 irreps" in out and "GCR logit fit FVE" in out
