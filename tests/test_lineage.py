"""Runs that start from another run: ``train --from RUN[:STEP]`` (continue with a changed config), ``--init-from``
with ``--init-parts`` / ``--freeze-parts``, their parent record, their errors, and the nested split that
ungrokking relies on (a smaller train fraction with the same split seed trains on a subset)."""

import hashlib
import json

import pytest
import torch
from faults_util import interrupted_at_update

from grokscope.cli import main
from grokscope.config import TaskConfig, apply_overrides
from grokscope.models import build_model
from grokscope.presets import tiny
from grokscope.store import load_run
from grokscope.tasks import make_task
from grokscope.training import resume, train
from grokscope.training.lineage import Parent, parse_source, part_keys, prepare_start, write_start
from grokscope.training.loop import new_run_dir

torch.set_num_threads(1)


def _cfg(epochs=30, **more):
    return apply_overrides(tiny(), {"train.epochs": epochs, "train.checkpoint_every": 10, "train.log_every": 5,
                                    "train.measure_every": 0, **more})


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A tiny run of 30 epochs (checkpoints 0, 1, 2, 4, 8, 10, 20, 30; the state at 30)."""
    return train(_cfg(), tmp_path_factory.mktemp("lineage") / "parent", progress=False, threads=1)


def _digest(run_dir):
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


def test_from_the_last_state_continues_bitwise_as_one_longer_run(parent, tmp_path):
    longer = train(_cfg(60), tmp_path / "longer", progress=False, threads=1)
    child = train(_cfg(30), tmp_path / "child", progress=False, threads=1, parent=Parent(run=parent.dir))
    record = json.loads(child.meta["parent"])
    assert record["step"] == 30 and record["mode"] == "from" and record["optimizer"] == "continued"
    assert record["update"] == 30 and record["run"] == str(parent.dir.resolve())
    want, got = longer.metrics, child.metrics
    assert got.loc[0, "train_loss"] == parent.metrics.loc[30, "train_loss"]  # epoch 0 = the parent at step 30
    for epoch in (0, 5, 15, 30):  # AdamW's moments and the update counter came along: the same numbers, bit for bit
        for name in ("train_loss", "test_loss", "test_acc"):
            assert got.loc[epoch, name] == want.loc[30 + epoch, name], (epoch, name)


def test_from_an_earlier_step_copies_its_weights_with_a_fresh_optimiser(parent, tmp_path):
    before = _digest(parent.dir)
    child = train(_cfg(10, **{"optim.lr": 3e-3}), tmp_path / "c", progress=False, threads=1,
                  parent=Parent(run=parent.dir, step=10))
    record = json.loads(child.meta["parent"])
    assert (record["step"], record["optimizer"], record["update"]) == (10, "fresh", 0)
    assert child.metrics.loc[0, "train_loss"] == parent.metrics.loc[10, "train_loss"]
    for key, value in parent.load_state_dict(10).items():
        assert torch.equal(child.load_state_dict(0)[key], value), key
    assert _digest(parent.dir) == before  # the parent is only read


def test_a_changed_optimiser_kind_starts_the_optimiser_fresh(parent):
    start = prepare_start(_cfg(**{"optim.grad_filter": "ema"}), Parent(run=parent.dir))
    assert start.record["optimizer"] == "fresh" and not any(k.startswith("optim.") for k in start.tensors)
    start = prepare_start(_cfg(**{"optim.weight_decay": 0.1}), Parent(run=parent.dir))
    assert start.record["optimizer"] == "continued" and any(k.startswith("optim.") for k in start.tensors)


def test_a_from_run_resumes_to_the_same_numbers(parent, tmp_path):
    whole = train(_cfg(20), tmp_path / "whole", progress=False, threads=1, parent=Parent(run=parent.dir, step=20))
    # killed before its first epoch: only the first resume state and meta["parent"] exist
    cfg = _cfg(20)
    early = new_run_dir(tmp_path / "early", cfg)
    write_start(early, prepare_start(cfg, Parent(run=parent.dir, step=20)))
    assert resume(early, progress=False, threads=1).metrics.equals(whole.metrics)
    # interrupted in the middle
    with interrupted_at_update(7):
        train(cfg, tmp_path / "mid", progress=False, threads=1, parent=Parent(run=parent.dir, step=20))
    again = resume(tmp_path / "mid", progress=False, threads=1)
    assert again.metrics.equals(whole.metrics)
    assert json.loads(again.meta["parent"])["step"] == 20


def test_init_from_copies_exactly_the_named_parts(parent, tmp_path):
    cfg = _cfg(10, **{"task.formula": "a-b", "model.init_seed": 3})
    child = train(cfg, tmp_path / "c", progress=False, threads=1,
                  parent=Parent(run=parent.dir, parts=("embed", "mlp"), freeze=("embed",)))
    task = make_task(cfg.task)
    fresh = build_model(cfg.model, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=task.n_ctx).state_dict()
    source, start, end = parent.load_state_dict(30), child.load_state_dict(0), child.load_state_dict(10)
    copied = {"embed.W_E", "pos_embed.W_pos", "blocks.0.mlp.W_in", "blocks.0.mlp.b_in", "blocks.0.mlp.W_out",
              "blocks.0.mlp.b_out"}
    for key in fresh:
        assert torch.equal(start[key], source[key] if key in copied else fresh[key]), key
    assert not torch.equal(fresh["blocks.0.attn.W_Q"], source["blocks.0.attn.W_Q"])  # the check can fail
    # frozen: no update and no weight decay; the rest trains
    assert torch.equal(end["embed.W_E"], start["embed.W_E"]) and torch.equal(end["pos_embed.W_pos"],
                                                                             start["pos_embed.W_pos"])
    assert not torch.equal(end["blocks.0.mlp.W_in"], start["blocks.0.mlp.W_in"])
    record = json.loads(child.meta["parent"])
    assert record["mode"] == "init" and record["parts"] == ["embed", "mlp"] and record["tensors"] == 6
    assert record["frozen"] == ["embed.W_E", "pos_embed.W_pos"] and record["optimizer"] == "fresh"


def test_part_names_follow_transformerlens():
    keys = ["embed.W_E", "pos_embed.W_pos", "blocks.0.attn.W_Q", "blocks.0.mlp.W_in", "blocks.0.ln1.w", "mlp.W_in",
            "ln_final.w", "unembed.W_U"]
    assert part_keys(keys, ["embed"]) == ["embed.W_E", "pos_embed.W_pos"]
    assert part_keys(keys, ["attn", "unembed"]) == ["blocks.0.attn.W_Q", "unembed.W_U"]
    assert part_keys(keys, ["mlp"]) == ["blocks.0.mlp.W_in", "mlp.W_in"]
    assert part_keys(keys, ["ln"]) == ["blocks.0.ln1.w", "ln_final.w"]
    assert part_keys(keys, ["all"]) == keys


def test_parse_source():
    assert parse_source("runs/a:200") == (parse_source("runs/a")[0], 200)
    assert parse_source("runs/a")[1] is None and parse_source("C:/x/run")[1] is None


@pytest.mark.parametrize("args, message", [
    (["--from", "{p}:15"], "no checkpoint at step 15; the nearest saved steps are 10 and 20"),
    (["--from", "{p}", "--set", "model.d_mlp=32"], "model.d_mlp: changes the parameter shapes (blocks.0.mlp.W_in"),
    (["--from", "{p}", "--set", "task.p=11"], "task.p: changes the parameter shapes (embed.W_E"),
    (["--from", "{p}/nothing"], "no such run directory"),
    (["--from", "{p}", "--preset", "tiny"], "--from continues the parent's own config"),
    (["--preset", "tiny", "--set", "task.p=11", "--init-from", "{p}", "--init-parts", "attn,embed"],
     "--init-from: embed.W_E does not fit ([14, 32] in"),
    (["--preset", "tiny", "--init-from", "{p}", "--init-parts", "embed,wings"], "unknown part 'wings'"),
    (["--preset", "tiny", "--freeze-parts", "embed"], "--freeze-parts needs --init-from RUN"),
    (["--from", "{p}", "--init-from", "{p}"], "not both"),
])
def test_bad_sources_end_in_one_line_and_exit_2(parent, tmp_path, capsys, args, message):
    before = _digest(parent.dir)
    out = tmp_path / "new"
    argv = ["train", "--quiet", "--threads", "1", "--out", str(out)] + [a.format(p=parent.dir) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists() and _digest(parent.dir) == before


def test_cli_from_applies_the_overrides_to_the_parents_config(parent, tmp_path, capsys):
    out = tmp_path / "cut"
    assert main(["train", "--quiet", "--threads", "1", "--from", f"{parent.dir}:20", "--set", "task.train_fraction=0.3",
                 "--epochs", "5", "--out", str(out)]) == 0
    run = load_run(out)
    assert run.config == apply_overrides(parent.config, {"task.train_fraction": 0.3, "train.epochs": 5})
    assert json.loads(run.meta["parent"])["step"] == 20
    capsys.readouterr()
    assert main(["show", str(out)]) == 0
    assert f"parent:     continued from {parent.dir.resolve()} at step 20 (optimiser fresh" in capsys.readouterr().out
    assert main(["train", "--quiet", "--resume", str(out)]) == 0  # a finished --from run: resume has nothing to do
    capsys.readouterr()


@pytest.mark.parametrize("formula, p, seed", [("a+b", 13, 0), ("a/b", 17, 5), ("a*b+a+b", 11, 2)])
def test_a_smaller_fraction_with_the_same_seed_trains_on_a_subset(formula, p, seed):
    """Ungrokking cuts the data: the child's training pairs must be among the parent's (the split is a prefix of
    one seeded permutation, whatever the fraction or n_train)."""
    def train_pairs(**kw):
        task = make_task(TaskConfig(formula=formula, p=p, split_seed=seed, **kw))
        return set(task.pair_index[task.train_idx].tolist()), set(task.pair_index.tolist())

    fractions = [0.9, 0.6, 0.45, 0.3, 0.15]
    sets = [train_pairs(train_fraction=f)[0] for f in fractions]
    for big, small in zip(sets, sets[1:]):
        assert small < big
    by_count, _ = train_pairs(n_train=len(sets[2]) - 3)
    assert by_count < sets[2] and len(by_count) == len(sets[2]) - 3


def test_varma_presets_cut_the_parents_data_to_a_subset_and_train(tmp_path):
    from grokscope.presets import get_preset
    from grokscope.sweep.presets import get_sweep_preset

    parent_cfg, ungrok, semi = (get_preset(n) for n in ("varma-parent", "varma-ungrok", "varma-semigrok"))
    assert (parent_cfg.task.p, parent_cfg.task.formula, parent_cfg.task.train_fraction) == (31, "a+b", 0.5)
    assert (parent_cfg.optim.weight_decay, parent_cfg.optim.lr, parent_cfg.model.d_model) == (1.0, 1e-2, 64)
    assert (ungrok.task.train_fraction, semi.task.train_fraction) == (0.1, 0.2)
    for cut in (ungrok, semi):
        assert cut.model == parent_cfg.model and cut.optim == parent_cfg.optim  # --init-from all fits, AdamW alike
        small, big = make_task(cut.task), make_task(parent_cfg.task)
        assert set(small.pair_index[small.train_idx].tolist()) < set(big.pair_index[big.train_idx].tolist())
    spec = get_sweep_preset("varma-critical-fraction")
    assert spec.base.task == parent_cfg.task and spec.base.train.epochs == 3000 and len(spec.seeds) == 3
    assert "task.split_seed" in spec.seed_fields
    # at tiny size: a parent, then the cut continued from it
    small = {"train.epochs": 20, "task.p": 11, "train.log_every": 5, "train.measure_every": 0,
             "train.checkpoint_every": 10}
    p = train(apply_overrides(parent_cfg, small), tmp_path / "p", progress=False, threads=1)
    c = train(apply_overrides(ungrok, small), tmp_path / "c", progress=False, threads=1,
              parent=Parent(run=p.dir, parts=("all",)))
    for key, value in p.load_state_dict(20).items():
        assert torch.equal(c.load_state_dict(0)[key], value), key
    assert c.config.task.train_fraction == 0.1 and int(c.metrics.index[-1]) == 20


def test_frozen_parts_stay_frozen_across_a_resume(parent, tmp_path):
    cfg = _cfg(20, **{"task.formula": "a-b"})
    lineage = Parent(run=parent.dir, parts=("all",), freeze=("embed", "unembed"))
    whole = train(cfg, tmp_path / "whole", progress=False, threads=1, parent=lineage)
    with interrupted_at_update(9):
        train(cfg, tmp_path / "cut", progress=False, threads=1, parent=lineage)
    again = resume(tmp_path / "cut", progress=False, threads=1)
    assert again.metrics.equals(whole.metrics)
    for key in ("embed.W_E", "unembed.W_U"):
        assert torch.equal(again.load_state_dict(20)[key], parent.load_state_dict(30)[key]), key
    mlp = "blocks.0.mlp.W_in"
    assert not torch.equal(again.load_state_dict(20)[mlp], parent.load_state_dict(30)[mlp])
    assert json.loads((again.dir / "parent.json").read_text()) == json.loads(again.meta["parent"])
