"""Your own task (issue 22 item 4): callables and lookup tables over a finite input set, registered by name, trained,
swept and reported like a built-in task; a table that is not a function is one clear error."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from grokscope.config import ConfigError, ExperimentConfig, TaskConfig
from grokscope.presets import get_preset
from grokscope.tasks import (
    function_task,
    make_modular_task,
    make_task,
    register_task,
    registered_tasks,
    table_task,
    unregister_task,
)


@pytest.fixture
def registered():
    """Registers a few tasks for one test and forgets them after."""
    names: list[str] = []

    def reg(name, builder):
        register_task(name, builder, replace=True)
        names.append(name)

    yield reg
    for n in names:
        unregister_task(n)


def test_a_registered_callable_over_z_p_is_the_built_in_modular_task(registered):
    """f(a, b) = a + b mod 13 as a callable gives the built-in task's tokens, labels and split, row for row."""
    registered("own-add13", function_task(lambda a, b: (a + b) % 13, 13))
    cfg = TaskConfig(kind="registered", name="own-add13", train_fraction=0.4, split_seed=3)
    own = make_task(cfg)
    ref = make_modular_task(TaskConfig(formula="a+b", p=13, train_fraction=0.4, split_seed=3))
    assert torch.equal(own.tokens, ref.tokens) and torch.equal(own.labels, ref.labels)
    assert torch.equal(own.train_idx, ref.train_idx) and torch.equal(own.test_idx, ref.test_idx)
    assert (own.d_vocab, own.d_vocab_out, own.n_ctx) == (14, 13, 3)


def test_a_lookup_table_over_any_alphabet_maps_symbols_to_tokens(registered):
    """A hand-written table over {'x', 'y'} with string labels: tokens by alphabet order, labels by first appearance;
    None from a callable leaves an input out."""
    table = {("x", "x"): "same", ("x", "y"): "diff", ("y", "x"): "diff", ("y", "y"): "same"}
    registered("own-eq", table_task(table, alphabet=["x", "y"]))
    task = make_task(TaskConfig(kind="registered", name="own-eq", train_fraction=1.0))
    assert task.tokens.tolist() == [[0, 0, 2], [0, 1, 2], [1, 0, 2], [1, 1, 2]]
    assert task.labels.tolist() == [0, 1, 1, 0] and task.d_vocab_out == 2
    registered("own-div", function_task(lambda a, b: None if b == 0 else a // b, 4))
    div = make_task(TaskConfig(kind="registered", name="own-div", train_fraction=1.0))
    assert div.tokens.shape == (12, 3) and div.labels.tolist()[:3] == [0, 0, 0]


def test_a_generator_gives_a_sequence_task_of_any_length(registered):
    """Rows from a generator function: inputs of length 4 (tokens [N, 5] with '='), read afresh on every build."""

    def rows():
        for n in range(16):
            bits = tuple((n >> i) & 1 for i in range(4))
            yield bits, sum(bits) % 2

    registered("own-parity4", table_task(rows))
    a = make_task(TaskConfig(kind="registered", name="own-parity4", train_fraction=0.5))
    b = make_task(TaskConfig(kind="registered", name="own-parity4", train_fraction=0.5))
    assert a.tokens.shape == (16, 5) and torch.equal(a.tokens, b.tokens)
    assert a.labels.tolist() == [bin(n).count("1") % 2 for n in range(16)]


def test_a_table_that_is_not_a_function_is_one_clear_error(registered):
    registered("own-bad", table_task([((1, 2), 3), ((2, 1), 3), ((1, 2), 4)]))
    with pytest.raises(ConfigError) as e:
        make_task(TaskConfig(kind="registered", name="own-bad"))
    assert str(e.value) == "task: the table is not a function: input (1, 2) has two labels, 3 and 4"


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"^task\.name: applies to task\.kind='registered' only"):
        TaskConfig(name="x")
    with pytest.raises(ConfigError, match=r"^task\.name: must name a registered task"):
        TaskConfig(kind="registered", name="")
    with pytest.raises(ConfigError, match=r"^task\.name: no task registered as 'nope-never'"):
        make_task(TaskConfig(kind="registered", name="nope-never"))
    with pytest.raises(ValueError, match="registered already"):
        register_task("own-twice", function_task(lambda a, b: a, 3))
        register_task("own-twice", function_task(lambda a, b: b, 3))
    unregister_task("own-twice")


def test_the_config_round_trips_and_old_configs_are_unchanged():
    cfg = ExperimentConfig(task=TaskConfig(kind="registered", name="own-x", train_fraction=0.5))
    assert ExperimentConfig.from_json(cfg.to_json()) == cfg
    assert json.loads(cfg.to_json())["task"]["name"] == "own-x"
    assert ExperimentConfig.from_json(get_preset("tiny").to_json()) == get_preset("tiny")


def test_entry_points_register_a_packages_tasks(tmp_path, monkeypatch):
    """A distribution on sys.path with a 'grokscope.tasks' entry point is found by name."""
    from grokscope.tasks import registry

    pkg = tmp_path / "owntasks_pkg.py"
    pkg.write_text("from grokscope.tasks import function_task\nmul5 = function_task(lambda a, b: a * b % 5, 5)\n")
    dist = tmp_path / "owntasks_pkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: owntasks-pkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[grokscope.tasks]\nown-mul5 = owntasks_pkg:mul5\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry.REGISTRY, "entry_points_read", False)
    try:
        assert "own-mul5" in registered_tasks()
        task = make_task(TaskConfig(kind="registered", name="own-mul5", train_fraction=1.0))
        assert task.labels.tolist() == [a * b % 5 for a in range(5) for b in range(5)]
    finally:
        unregister_task("own-mul5")


def test_a_registered_task_trains_resumes_sweeps_and_reports(registered, tmp_path):
    """A table the test builds trains with grokscope's transformer, resumes to the same weights, runs in a sweep
    spec that names it, and the report is written."""
    from grokscope.figures.report import write_report
    from grokscope.store.run import Run
    from grokscope.sweep.local import run_sweep
    from grokscope.sweep.spec import make_spec
    from grokscope.training import resume, train

    gen = torch.Generator().manual_seed(0)
    lookup = torch.randint(0, 5, (7, 7), generator=gen)  # a random table: no formula
    registered("own-table7", table_task({(a, b): int(lookup[a, b]) for a in range(7) for b in range(7)}))
    base = get_preset("tiny")
    cfg = ExperimentConfig.from_dict({**base.to_dict(), "task": {"kind": "registered", "name": "own-table7",
                                                                 "train_fraction": 0.6}})
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=20))
    full = train(cfg, tmp_path / "full", progress=False)
    half_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=10))
    half = train(half_cfg, tmp_path / "half", progress=False)
    (half.dir / "config.json").write_text(cfg.to_json() + "\n")
    resumed = resume(half.dir, progress=False)
    a, b = full.load_state_dict(), resumed.load_state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert write_report(Run(full.dir)).exists()

    spec = make_spec(name="own", base=cfg.to_dict(), axes={"optim.weight_decay": [0.0, 1.0]}, seeds=1,
                     outcome={"tau": 10})
    res = run_sweep(spec, tmp_path / "sweep", workers=0, progress=False, log=lambda s: None)
    assert res is not None
    cells = [p for p in (tmp_path / "sweep").rglob("config.json")]
    assert len(cells) >= 2 and all(json.loads(p.read_text())["task"]["name"] == "own-table7" for p in cells)
