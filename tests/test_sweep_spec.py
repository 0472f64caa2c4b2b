"""Sweep specs: parsing, expansion, stable names and one-line rejection of bad specs (pure, no runs)."""

import json

import pytest

from grokscope.config import ConfigError, apply_overrides
from grokscope.presets import tiny
from grokscope.sweep.spec import (
    OutcomeParams,
    SweepSpecError,
    cell_name,
    config_hash,
    expand,
    make_spec,
    spec_from_dict,
)
from grokscope.sweep.spec_files import load_spec


def spec(**kw):
    data = {"name": "t", "base": "tiny", "axes": {"optim.weight_decay": [0.0, 1.0]}, "seeds": 1}
    data.update(kw)
    return spec_from_dict(data)


def test_expansion_order_and_points():
    s = spec(axes={"optim.weight_decay": [0, 0.5], "task.train_fraction": [0.3, 0.6, 0.9]}, seeds=[3, 7])
    cells = expand(s)
    assert len(cells) == s.size == 2 * 3 * 2
    # first axis slowest, seeds innermost
    assert [(c.value("optim.weight_decay"), c.value("task.train_fraction"), c.seed) for c in cells[:4]] == [
        (0, 0.3, 3),
        (0, 0.3, 7),
        (0, 0.6, 3),
        (0, 0.6, 7),
    ]
    c = cells[5]
    assert c.config.optim.weight_decay == 0.0 and c.config.task.train_fraction == 0.9 and c.config.model.init_seed == 7
    assert c.config.name == c.name
    assert [c.position for c in cells] == list(range(12))
    # everything else comes from the base
    assert c.config.task.p == tiny().task.p and c.config.train.epochs == tiny().train.epochs


def test_names_are_stable_readable_and_unique():
    s = spec(axes={"optim.weight_decay": [0.0, 0.3], "task.train_fraction": [0.5]}, seeds=2)
    a = [c.name for c in expand(s)]
    b = [c.name for c in expand(spec(axes={"optim.weight_decay": [0.0, 0.3], "task.train_fraction": [0.5]}, seeds=2))]
    assert a == b and len(set(a)) == 4
    assert a[2].startswith("wd0.3-frac0.5-s0-") and len(a[2].rsplit("-", 1)[1]) == 8
    # the hash follows the whole config: a different base gives different names for the same point
    other = spec(
        axes={"optim.weight_decay": [0.0, 0.3], "task.train_fraction": [0.5]}, seeds=2, set={"train.epochs": 60}
    )
    assert not set(a) & {c.name for c in expand(other)}


def test_config_hash_ignores_name_and_default_fields():
    cfg = tiny()
    assert config_hash(cfg) == config_hash(apply_overrides(cfg, {"name": "other"}))
    assert config_hash(cfg) != config_hash(apply_overrides(cfg, {"optim.weight_decay": 0.5}))
    assert cell_name([("optim.lr", 0.001), ("model.act_fn", "gelu")], 2, cfg).startswith("lr0.001-actgelu-s2-")


def test_ranges_hand_computed():
    s = spec(
        axes={
            "task.train_fraction": {"linspace": [0.2, 0.8, 4]},
            "optim.lr": {"logspace": [1e-4, 1e-2, 3]},
            "task.p": {"range": [11, 18, 2]},
        }
    )
    ax = {a.key: [v[0] for v in a.values] for a in s.axes}
    assert ax["task.train_fraction"] == [0.2, 0.4, 0.6, 0.8]
    assert ax["optim.lr"] == [1e-4, 1e-3, 1e-2]
    assert ax["task.p"] == [11, 13, 15, 17] and all(isinstance(v, int) for v in ax["task.p"])
    # a linspace over an integer field gives integers
    s = spec(axes={"model.d_mlp": {"linspace": [32, 64, 3]}})
    assert [v[0] for v in s.axes[0].values] == [32, 48, 64] and isinstance(s.axes[0].values[1][0], int)


def test_zipped_axes_and_seed_fields():
    s = spec(
        axes={"model.d_model,model.d_mlp": [[32, 64], [48, 96]]},
        seeds=[1],
        seed_fields=["model.init_seed", "task.split_seed"],
    )
    cells = expand(s)
    assert [(c.config.model.d_model, c.config.model.d_mlp) for c in cells] == [(32, 64), (48, 96)]
    assert all(c.config.task.split_seed == 1 and c.config.model.init_seed == 1 for c in cells)


def test_outcome_params_and_round_trip(tmp_path):
    s = spec(outcome={"threshold": 0.95, "tau": 20}, description="d")
    assert s.outcome == OutcomeParams(threshold=0.95, tau=20)
    back = spec_from_dict(json.loads(json.dumps(s.to_dict())))
    assert [c.name for c in expand(back)] == [c.name for c in expand(s)] and back.outcome == s.outcome
    assert make_spec(name="t", base="tiny", axes={"optim.weight_decay": [0.0, 1.0]}, seeds=1).size == 2


def test_load_json_yaml_and_python(tmp_path):
    data = {"name": "f", "base": "tiny", "axes": {"optim.weight_decay": [0, 1]}, "seeds": 2}
    (tmp_path / "s.json").write_text(json.dumps(data))
    assert load_spec(tmp_path / "s.json").size == 4
    (tmp_path / "mod.py").write_text(
        "def sweep():\n    return {'name': 'py', 'base': 'tiny', 'axes': {'optim.lr': [0.001, 0.01]}}\n"
        "def other():\n    from grokscope.sweep import make_spec\n    return make_spec(name='o', base='tiny', "
        "axes={'optim.lr': [0.1]})\n"
    )
    assert load_spec(f"{tmp_path}/mod.py").name == "py"
    assert load_spec(f"{tmp_path}/mod.py:other").size == 1
    yaml = pytest.importorskip("yaml")
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(data))
    assert load_spec(tmp_path / "s.yaml").size == 4


@pytest.mark.parametrize(
    "kw, needle",
    [
        ({"axes": {"optim.wd": [0.1]}}, "axes.optim.wd: unknown config field 'optim.wd'"),
        ({"axes": {"weight_decay": [0.1]}}, "did you mean optim.weight_decay"),
        ({"axes": {"optim.weight_decay": []}}, "axes.optim.weight_decay: empty axis"),
        ({"axes": {"optim.weight_decay": [0.1, -1]}}, "optim.weight_decay: must be a finite number >= 0"),
        ({"axes": {"task.train_fraction": [0.5, 1.5]}}, "task.train_fraction: must be in (0, 1]"),
        ({"axes": {"task.p": ["big"]}}, "task.p: expected an integer"),
        ({"axes": {"optim.weight_decay": [0.1, 0.1]}}, "duplicate value 0.1"),
        ({"axes": {"optim.weight_decay": {"linspace": [0, 1]}}}, "expected [start, stop, count]"),
        ({"axes": {"optim.lr": {"logspace": [0, 1, 3]}}}, "must be > 0"),
        ({"axes": {"optim.lr": {"steps": [1]}}}, "expected a list, or an object with one of"),
        ({"axes": {"name": ["a"]}}, "'name' cannot be swept"),
        ({"axes": {"model.init_seed": [0, 1]}}, "seed_fields: model.init_seed is also a sweep axis"),
        ({"seeds": 0}, "seeds: a count must be >= 1"),
        ({"seeds": [1, 1]}, "duplicate seeds"),
        ({"base": "nope"}, "base: unknown preset 'nope'"),
        ({"set": {"train.epoch": 5}}, "set: unknown config field 'train.epoch'; did you mean train.epochs?"),
        ({"outcome": {"tau": -1}}, "outcome.tau: must be an integer >= 0"),
        ({"outcome": {"gap": 3}}, "outcome.gap: unknown key"),
        ({"axez": {}}, "unknown key 'axez'"),
    ],
)
def test_bad_specs_rejected_with_one_line(kw, needle):
    with pytest.raises(SweepSpecError) as e:
        spec(**kw)
    msg = str(e.value)
    assert needle in msg, msg
    assert "\n" not in msg
    assert isinstance(e.value, ConfigError)  # the CLI turns it into exit code 2


def test_bad_file_specs(tmp_path):
    with pytest.raises(SweepSpecError, match="no such sweep spec file"):
        load_spec(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(SweepSpecError, match="not valid JSON"):
        load_spec(tmp_path / "bad.json")
    (tmp_path / "b.json").write_text(json.dumps({"base": "tiny", "axes": {"optim.weight_decay": []}}))
    with pytest.raises(SweepSpecError, match=r"b\.json: axes\.optim\.weight_decay: empty axis"):
        load_spec(tmp_path / "b.json")


def test_examples_parse_and_the_file_form_of_a_preset_gives_its_cells():
    from pathlib import Path

    from grokscope.sweep.presets import get_sweep_preset

    ex = Path(__file__).resolve().parents[1] / "examples" / "sweeps"
    for f in sorted(ex.glob("*.json")):
        assert load_spec(f).size >= 1
    assert load_spec(f"{ex}/python_spec.py").size == 12
    assert [c.name for c in expand(load_spec(ex / "wd_fraction.json"))] == [
        c.name for c in expand(get_sweep_preset("wd-fraction"))
    ]
