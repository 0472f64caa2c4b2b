"""Activation patching and attribution patching on constructed and tiny trained networks."""

import pytest
import torch

from grokscope.analysis.construct import quadratic_mlp_addition
from grokscope.config import ModelConfig, TaskConfig
from grokscope.interp.attribution import (
    attribution_patching,
    attribution_sweep,
    compare_with_activation_patching,
    pearson,
    spearman,
)
from grokscope.interp.patch_sweeps import sweep_heads, sweep_neurons, sweep_positions
from grokscope.interp.patching import (
    PatchSetup,
    Site,
    make_corruption,
    patch_activation,
    patch_sites,
    site_mask,
)
from grokscope.models import Transformer
from grokscope.tasks import make_task

P = 13


@pytest.fixture(scope="module")
def task():
    return make_task(TaskConfig(p=P, train_fraction=0.5))


@pytest.fixture(scope="module")
def transformer():
    cfg = ModelConfig(d_model=16, n_heads=2, d_head=8, d_mlp=24, init_seed=3)
    return Transformer(cfg, d_vocab=P + 1, d_vocab_out=P, n_ctx=3).eval()


@pytest.fixture(scope="module")
def constructed():
    return quadratic_mlp_addition(P, [2, 5], scale=1.0)


def test_make_corruption_changes_one_operand_and_the_answer(task):
    s = make_corruption(task, 40, operand="b", seed=1)
    assert s.n == 40
    assert torch.equal(s.clean_tokens[:, [0, 2]], s.corrupt_tokens[:, [0, 2]])
    assert (s.clean_tokens[:, 1] != s.corrupt_tokens[:, 1]).all()
    assert torch.equal(s.clean_answers, (s.clean_tokens[:, 0] + s.clean_tokens[:, 1]) % P)
    assert torch.equal(s.corrupt_answers, (s.corrupt_tokens[:, 0] + s.corrupt_tokens[:, 1]) % P)
    assert (s.clean_answers != s.corrupt_answers).all()
    with pytest.raises(ValueError, match="operand"):
        make_corruption(task, 4, operand="c")


def test_patching_everything_recovers_all_and_nothing_recovers_none(task, transformer):
    s = make_corruption(task, 64)
    # the whole residual stream before the block (every position) determines everything downstream
    assert patch_activation(transformer, s, "blocks.0.hook_resid_pre").recovered == pytest.approx(1.0, abs=1e-6)
    # the final residual stream at the last position is what the unembedding reads
    assert patch_activation(transformer, s, "blocks.0.hook_resid_post", position=-1).recovered == pytest.approx(
        1.0, abs=1e-6
    )
    # the residual stream at an earlier position after the block cannot matter (the logits read the last one)
    assert patch_activation(transformer, s, "blocks.0.hook_resid_post", position=0).recovered == pytest.approx(
        0.0, abs=1e-6
    )
    # an empty set of neurons patches nothing
    assert patch_activation(transformer, s, "blocks.0.mlp.hook_post", units=[]).recovered == 0.0
    # the noising direction reads the other way round
    assert patch_activation(transformer, s, "blocks.0.hook_resid_pre", direction="noise").recovered == pytest.approx(
        0.0, abs=1e-6
    )
    assert patch_activation(transformer, s, "blocks.0.mlp.hook_post", units=[], direction="noise").recovered == 1.0


def test_patching_from_the_same_input_recovers_exactly_100_percent(task, transformer):
    s = make_corruption(task, 32)
    # a "corruption" of the clean inputs by themselves on positions 0-1 of the residual stream, with the
    # corrupted run's '=' position: patch position 0 and 1 from clean and everything downstream matches
    r = patch_sites(transformer, s, [Site("blocks.0.hook_resid_pre", None)])
    ld, clean, corrupt = r
    assert float(ld[0]) == pytest.approx(clean, abs=1e-5)
    # every neuron of the constructed model from the clean run: the exact clean logit difference
    s2 = PatchSetup(s.clean_tokens, s.corrupt_tokens, s.clean_answers, s.corrupt_answers)
    m = quadratic_mlp_addition(P, [2, 5])
    res = patch_activation(m, s2, "mlp.hook_post")
    assert res.recovered == 1.0 or res.recovered == pytest.approx(1.0, abs=1e-9)
    assert res.patched_logit_diff == pytest.approx(res.clean_logit_diff, abs=1e-5)


def test_batched_sweep_equals_one_patch_at_a_time(task, transformer):
    s = make_corruption(task, 20, seed=2)
    swept = sweep_neurons(transformer, s)
    singles = [
        patch_activation(transformer, s, "blocks.0.mlp.hook_post", position=-1, units=[i]).recovered for i in range(24)
    ]
    assert swept.values.reshape(-1).tolist() == pytest.approx(singles, abs=1e-6)
    small, _, _ = patch_sites(
        transformer, s, [Site("blocks.0.mlp.hook_post", -1, None, (i,)) for i in range(24)], max_rows=20
    )
    big, _, _ = patch_sites(
        transformer, s, [Site("blocks.0.mlp.hook_post", -1, None, (i,)) for i in range(24)], max_rows=10_000
    )
    assert torch.allclose(small, big, atol=1e-6)


def test_sweep_tables_have_the_right_shapes(task, transformer):
    s = make_corruption(task, 16)
    heads = sweep_heads(transformer, s)
    assert heads.values.shape == (3, 2) and heads.row_labels == ["pos 0", "pos 1", "pos 2"]
    # z at positions 0 and 1 cannot reach the last position's logits in one layer
    assert torch.allclose(heads.values[:2], torch.zeros(2, 2, dtype=torch.float64), atol=1e-6)
    pos = sweep_positions(transformer, s)
    assert pos.values.shape == (4, 3)
    assert pos.values[0, 0] == pytest.approx(1.0, abs=1e-5)  # resid_pre at the corrupted operand: everything
    assert pos.values[0, 1] == pytest.approx(0.0, abs=1e-6)  # the unchanged operand: nothing
    assert "pos 0" in heads.table() and heads.to_dict()["values"][2][0] is not None


def test_site_mask_selects_heads_positions_and_units():
    m = site_mask(Site("blocks.0.attn.hook_z", position=2, head=1), (5, 3, 4, 8))
    assert m.shape == (3, 4, 8) and int(m.sum()) == 8 and bool(m[2, 1].all())
    m = site_mask(Site("blocks.0.mlp.hook_post", position=-1, units=(0, 3)), (5, 3, 10))
    assert int(m.sum()) == 2 and bool(m[2, 0]) and bool(m[2, 3])
    with pytest.raises(ValueError, match="no head axis"):
        site_mask(Site("blocks.0.mlp.hook_post", head=0), (5, 3, 10))


def test_neuron_effects_add_up_in_a_network_linear_in_them(task, constructed):
    """Downstream of mlp.hook_post the constructed model is linear: single-neuron effects sum to the whole."""
    s = make_corruption(task, 60)
    single = sweep_neurons(constructed, s).values.sum()
    whole = patch_activation(constructed, s, "mlp.hook_post").recovered
    assert float(single) == pytest.approx(whole, abs=1e-5)


def test_attribution_is_exact_when_the_metric_is_linear_in_the_activation(task, constructed, transformer):
    s = make_corruption(task, 50)
    for model, kinds in ((constructed, ["neurons"]), (transformer, ["neurons", "positions"])):
        attr = attribution_patching(model, s)
        for comp in compare_with_activation_patching(model, s, kinds, attr=attr):
            if comp.kind == "positions":
                # linear downstream: only mlp_out and resid_post (the last block's outputs)
                act, est = comp.activation.values[2:], comp.attribution.values[2:]
                assert torch.allclose(act, est, atol=1e-5)
            else:
                assert torch.allclose(comp.activation.values, comp.attribution.values, atol=1e-5), comp.kind
                assert comp.pearson == pytest.approx(1.0, abs=1e-6)
    # ...and only approximate where it is not (x^2 neurons: the pre-activations enter quadratically)
    comp = compare_with_activation_patching(constructed, s, ["neurons_pre"])[0]
    assert comp.max_abs_error > 1e-3


def test_attribution_noise_direction_matches_too(task, transformer):
    s = make_corruption(task, 30)
    attr = attribution_patching(transformer, s, direction="noise")
    est = attribution_sweep(transformer, attr, "neurons")
    act = sweep_neurons(transformer, s, direction="noise")
    assert torch.allclose(act.values, est.values, atol=1e-5)


def test_correlations():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert pearson(x, 2 * x + 1) == pytest.approx(1.0)
    assert pearson(x, -x) == pytest.approx(-1.0)
    assert spearman(x, x**3) == pytest.approx(1.0)
    assert spearman(torch.tensor([1.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 2.0])) == pytest.approx(1.0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny preset trained for 150 epochs (memorises; seconds)."""
    from grokscope.config import apply_overrides
    from grokscope.presets import tiny
    from grokscope.training import train

    cfg = apply_overrides(tiny(), {"train.epochs": 150, "train.checkpoint_every": 50})
    return train(cfg, tmp_path_factory.mktemp("interp") / "run", progress=False)


def test_attribution_correlates_with_activation_patching_on_a_trained_model(trained):
    model, task = trained.load_model(), trained.task()
    s = make_corruption(task, 100)
    comps = {c.kind: c for c in compare_with_activation_patching(model, s, ["neurons", "neurons_pre", "heads"])}
    assert comps["neurons"].pearson > 0.999  # linear downstream: exact
    assert comps["neurons_pre"].pearson > 0.8  # through the ReLU: a first-order estimate
    assert comps["heads"].pearson > 0.8
    # what makes attribution fast, counted rather than timed (a wall-clock ratio is a race on a shared machine):
    # activation patching runs the model over the inputs once per site (tiled into a few calls) plus the clean and
    # corrupted runs; attribution runs it twice, whatever the number of sites (and one backward pass)
    rows: list[int] = []
    real = model.forward_all
    model.forward_all = lambda tokens: (rows.append(int(tokens.shape[0])), real(tokens))[1]
    try:
        attribution_patching(model, s)
        attr_rows, rows[:] = sum(rows), []
        act = sweep_neurons(model, s)
        act_rows = sum(rows)
    finally:
        del model.forward_all
    n_sites = comps["neurons"].n_sites
    assert n_sites == act.values.numel() == model.cfg.d_mlp
    assert attr_rows == 2 * s.n
    assert act_rows == (n_sites + 2) * s.n
