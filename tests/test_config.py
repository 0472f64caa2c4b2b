import dataclasses
import json

import pytest

from grokscope.config import (
    ConfigError,
    ExperimentConfig,
    ModelConfig,
    OptimConfig,
    TaskConfig,
    TrainConfig,
    apply_overrides,
    field_paths,
    parse_override,
)
from grokscope.presets import PRESETS, describe_presets, get_preset


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_round_trips_through_json(name):
    cfg = get_preset(name)
    again = ExperimentConfig.from_json(cfg.to_json())
    assert again == cfg
    assert json.loads(again.to_json()) == json.loads(cfg.to_json())


def test_configs_are_frozen_and_keyword_only():
    cfg = ExperimentConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        TaskConfig("modular")  # type: ignore[misc]


def test_nanda_mainline_is_the_paper_setting():
    cfg = get_preset("nanda-mainline")
    assert (cfg.task.formula, cfg.task.p, cfg.task.train_fraction) == ("a+b", 113, 0.3)
    m = cfg.model
    assert (m.arch, m.n_layers, m.d_model, m.n_heads, m.d_head, m.d_mlp, m.act_fn) == (
        "transformer",
        1,
        128,
        4,
        32,
        512,
        "relu",
    )
    o = cfg.optim
    assert (o.lr, o.weight_decay, o.betas, o.warmup_steps) == (1e-3, 1.0, (0.9, 0.98), 10)
    assert (cfg.train.epochs, cfg.train.loss_dtype, cfg.train.batch_size) == (40_000, "float64", None)


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: TaskConfig(p=1), "task.p"),
        (lambda: TaskConfig(train_fraction=0.0), "task.train_fraction"),
        (lambda: TaskConfig(train_fraction=1.01), "task.train_fraction"),
        (lambda: TaskConfig(formula="a/b", p=15), "task.p"),
        (lambda: TaskConfig(formula="a+"), "task.formula"),
        (lambda: TaskConfig(kind="parity"), "task.kind"),
        (lambda: ModelConfig(d_model=0), "model.d_model"),
        (lambda: ModelConfig(act_fn="tanh"), "model.act_fn"),
        (lambda: ModelConfig(arch="rnn"), "model.arch"),
        (lambda: OptimConfig(lr=0), "optim.lr"),
        (lambda: OptimConfig(weight_decay=-1), "optim.weight_decay"),
        (lambda: OptimConfig(betas=(0.9, 1.0)), "optim.betas"),
        (lambda: TrainConfig(epochs=0), "train.epochs"),
        (lambda: TrainConfig(loss_dtype="float16"), "train.loss_dtype"),
        (lambda: TrainConfig(stop_after_grok=0.5), "train.stop_after_grok"),
        (lambda: ExperimentConfig(name="a/b"), "name"),
    ],
)
def test_validation_names_the_field(make, field):
    with pytest.raises(ConfigError) as err:
        make()
    assert str(err.value).startswith(field + ":")


def test_division_with_prime_p_is_fine():
    assert TaskConfig(formula="a/b", p=13).p == 13


def test_from_dict_rejects_unknown_and_mistyped_fields():
    with pytest.raises(ConfigError, match=r"^task\.q: unknown field"):
        ExperimentConfig.from_dict({"task": {"q": 3}})
    with pytest.raises(ConfigError, match=r"^optim\.lr: expected a number"):
        ExperimentConfig.from_dict({"optim": {"lr": "fast"}})
    with pytest.raises(ConfigError, match=r"^train\.epochs: expected an integer"):
        ExperimentConfig.from_dict({"train": {"epochs": 1.5}})
    with pytest.raises(ConfigError, match=r"^model\.tie_unembed: expected true or false"):
        ExperimentConfig.from_dict({"model": {"tie_unembed": 1}})
    with pytest.raises(ConfigError, match="not valid JSON"):
        ExperimentConfig.from_json("{")


def test_overrides_build_a_new_validated_config():
    base = get_preset("nanda-mainline")
    key, value = parse_override("optim.weight_decay=0.3")
    cfg = apply_overrides(base, {key: value, "train.batch_size": None, "optim.betas": [0.9, 0.99]})
    assert cfg.optim.weight_decay == 0.3 and cfg.optim.betas == (0.9, 0.99)
    assert base.optim.weight_decay == 1.0  # unchanged
    assert parse_override("task.formula=a*b") == ("task.formula", "a*b")
    assert parse_override("train.stop_after_grok=null") == ("train.stop_after_grok", None)
    with pytest.raises(ConfigError, match="did you mean optim.weight_decay"):
        apply_overrides(base, {"weight_decay": 0.1})
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("optim.lr")
    with pytest.raises(ConfigError, match=r"^optim\.lr"):
        apply_overrides(base, {"optim.lr": -1})


def test_field_paths_cover_every_leaf():
    paths = field_paths(ExperimentConfig())
    assert "optim.weight_decay" in paths and "task.p" in paths and "name" in paths
    assert all(not isinstance(v, (TaskConfig, ModelConfig)) for v in paths.values())


def test_describe_presets_lists_every_preset_with_a_description():
    rows = dict(describe_presets())
    assert set(rows) == set(PRESETS) and all(rows.values())


def test_flat_dict_gives_every_leaf_of_a_config_once_under_its_dotted_path():
    from grokscope.config import field_paths, flat_dict

    cfg = get_preset("nanda-mainline")
    flat = flat_dict(cfg.to_dict())
    assert flat.keys() == field_paths(cfg).keys()  # the dict walk and the dataclass walk agree
    assert flat["task.p"] == 113 and flat["optim.weight_decay"] == 1.0
    assert flat_dict({"a": {"b": {"c": 1}, "d": [1, 2]}, "e": None}) == {"a.b.c": 1, "a.d": [1, 2], "e": None}


def test_is_prime_against_a_sieve_squares_of_primes_included():
    from grokscope.formula import is_prime

    n_max = 200
    sieve = [True] * (n_max + 1)
    sieve[0] = sieve[1] = False
    for d in range(2, n_max + 1):
        for m in range(2 * d, n_max + 1, d):
            sieve[m] = False
    assert [n for n in range(n_max + 1) if is_prime(n)] == [n for n in range(n_max + 1) if sieve[n]]
    assert not any(is_prime(q * q) for q in (2, 3, 5, 7, 11, 13))
