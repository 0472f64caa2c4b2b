"""The zoo's tasks and config fields (issue 7): conditional formulas, multi-task, S5, sparse parity, splits."""

import pytest
import torch

from grokscope.config import ConfigError, ExperimentConfig, ModelConfig, OptimConfig, TaskConfig, TrainConfig
from grokscope.presets import get_preset
from grokscope.tasks import make_task, parse_formula, task_metrics
from grokscope.tasks.zoo import S5_PERMUTATIONS, s5_table
from grokscope.training.ensemble import check_ensemble_configs


def test_power_conditional_formula_matches_a_python_reference():
    p = 11
    task = make_task(TaskConfig(formula="x/y if y is odd else x-y", p=p))
    assert task.is_full_grid  # y = 0 is even, so no division by zero is ever taken
    for (a, b, _), c in zip(task.tokens.tolist(), task.labels.tolist()):
        want = a * pow(b, p - 2, p) % p if b % 2 == 1 else (a - b) % p
        assert c == want


def test_conditional_masks_division_only_where_the_branch_is_taken():
    task = make_task(TaskConfig(formula="a/b if b is even else a+b", p=7))
    assert task.tokens.shape[0] == 7 * 7 - 7  # b = 0 is even: those rows divide by zero
    assert not (task.tokens[:, 1] == 0).any()
    assert parse_formula("a if a is even else b").tree[0] == "if"


@pytest.mark.parametrize("text", ["a if b", "a if b is odd", "a if b is prime else a", "a if b is odd else", "if a"])
def test_malformed_conditionals_are_one_line_formula_errors(text):
    with pytest.raises(ConfigError, match=r"^task\.formula: "):
        TaskConfig(formula=text, p=7)


def test_s5_tables_follow_the_group_laws():
    perms = [tuple(x) for x in S5_PERMUTATIONS]
    index = {q: i for i, q in enumerate(perms)}
    xy, conj, xyx = s5_table("x*y"), s5_table("x*y*x^-1"), s5_table("x*y*x")
    rng = torch.Generator().manual_seed(0)
    for x, y in torch.randint(0, 120, (50, 2), generator=rng).tolist():
        X, Y = perms[x], perms[y]
        comp = tuple(X[Y[i]] for i in range(5))
        inv = tuple(sorted(range(5), key=lambda i: X[i]))
        assert xy[x, y] == index[comp]
        assert conj[x, y] == index[tuple(comp[inv[i]] for i in range(5))]
        assert xyx[x, y] == index[tuple(comp[X[i]] for i in range(5))]
    assert (xy[0] == torch.arange(120)).all() and (conj[0] == torch.arange(120)).all()  # identity first
    assert all(sorted(row) == list(range(120)) for row in xy.tolist())  # a Latin square


def test_s5_task_shapes_and_split():
    task = make_task(TaskConfig(kind="s5", formula="x*y*x", train_fraction=0.5))
    assert (task.d_vocab, task.d_vocab_out, task.n_ctx) == (121, 120, 3)
    assert task.tokens.shape == (14400, 3) and (task.tokens[:, 2] == 120).all()
    assert task.train_idx.numel() == 7200 and task.test_idx.numel() == 7200


def test_multi_task_has_operation_tokens_and_per_task_metrics():
    p = 7
    task = make_task(TaskConfig(kind="multi", formula="a+b; a/b", p=p, train_fraction=0.5))
    assert (task.d_vocab, task.d_vocab_out, task.n_ctx) == (p + 3, p, 4)
    assert task.tokens.shape[0] == p * p + p * (p - 1)
    assert set(task.tokens[:, 1].tolist()) == {p + 1, p + 2} and (task.tokens[:, 3] == p).all()
    add = task.groups == 0
    assert ((task.tokens[add, 0] + task.tokens[add, 2]) % p == task.labels[add]).all()
    div = task.groups == 1
    assert ((task.labels[div] * task.tokens[div, 2]) % p == task.tokens[div, 0]).all()
    perfect = torch.nn.functional.one_hot(task.labels, p).double() * 50
    m = task_metrics(task, perfect)
    assert m["test_acc_op0"] == m["test_acc_op1"] == m["train_acc_op1"] == 1.0
    assert task_metrics(make_task(TaskConfig(p=7)), torch.zeros(49, 7)) == {}


def test_sparse_parity_data():
    cfg = TaskConfig(kind="sparse_parity", n_bits=12, parity_k=3, n_examples=500, n_train=200, split_seed=3)
    task = make_task(cfg)
    assert task.tokens.shape == (500, 13) and (task.tokens[:, -1] == 1).all()
    assert set(task.tokens.unique().tolist()) <= {0, 1}
    assert (task.labels == task.tokens[:, :3].sum(1) % 2).all()
    assert len({tuple(r) for r in task.tokens.tolist()}) == 500  # distinct sequences
    assert task.train_idx.numel() == 200 and task.test_idx.numel() == 300
    again = make_task(cfg)
    assert torch.equal(task.tokens, again.tokens) and torch.equal(task.train_idx, again.train_idx)
    big = make_task(TaskConfig(kind="sparse_parity", n_bits=40, n_examples=300))  # rejection-sampled path
    assert len({tuple(r) for r in big.tokens.tolist()}) == 300


def test_n_train_overrides_the_fraction_and_is_checked():
    task = make_task(TaskConfig(p=11, n_train=17))
    assert task.train_idx.numel() == 17 and task.test_idx.numel() == 121 - 17
    assert torch.equal(make_task(TaskConfig(p=11)).train_idx, make_task(TaskConfig(p=11, n_train=None)).train_idx)
    with pytest.raises(ConfigError, match=r"^task\.n_train: "):
        make_task(TaskConfig(p=5, n_train=26))


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: TaskConfig(kind="s5", formula="x+y"), "task.formula"),
        (lambda: TaskConfig(kind="multi", formula="a+b"), "task.formula"),
        (lambda: TaskConfig(kind="multi", formula="a+b;a/b", p=15), "task.p"),
        (lambda: TaskConfig(n_train=0), "task.n_train"),
        (lambda: TaskConfig(parity_k=31), "task.parity_k"),
        (lambda: TaskConfig(n_bits=0), "task.n_bits"),
        (lambda: TaskConfig(n_bits=3, n_examples=9), "task.n_examples"),
        (lambda: ModelConfig(arch="mlp", attn_only=True), "model.attn_only"),
        (lambda: ModelConfig(dropout=1.0), "model.dropout"),
        (lambda: ModelConfig(attn_only=True, dropout=0.1), "model.dropout"),
        (lambda: ModelConfig(init_scale=0.0), "model.init_scale"),
        (lambda: ModelConfig(fixed_embedding="square"), "model.fixed_embedding"),
        (lambda: ModelConfig(fixed_embedding="circle", arch="mlp", d_model=3), "model.fixed_embedding"),
        (lambda: OptimConfig(decay="l3"), "optim.decay"),
        (lambda: OptimConfig(grad_filter="fft"), "optim.grad_filter"),
        (lambda: OptimConfig(filter_alpha=1.0), "optim.filter_alpha"),
        (lambda: OptimConfig(filter_lambda=-1.0), "optim.filter_lambda"),
        (lambda: OptimConfig(filter_window=0), "optim.filter_window"),
        (lambda: TrainConfig(loss="mse"), "train.loss"),
        (lambda: ExperimentConfig(task=TaskConfig(kind="sparse_parity")), "model.arch"),
        (lambda: ExperimentConfig(model=ModelConfig(arch="vector_mlp")), "model.arch"),
        (
            lambda: ExperimentConfig(task=TaskConfig(kind="multi", formula="a+b;a-b"), model=ModelConfig(arch="mlp")),
            "model.arch",
        ),
    ],
)
def test_new_fields_are_validated_by_name(make, field):
    with pytest.raises(ConfigError) as err:
        make()
    assert str(err.value).startswith(field + ":")


def test_old_config_json_without_new_fields_still_loads():
    old = {
        "name": "x",
        "task": {"kind": "modular", "formula": "a+b", "p": 13, "train_fraction": 0.5, "split_seed": 0},
        "model": {"arch": "transformer", "d_model": 32},
        "optim": {"lr": 0.01},
        "train": {"epochs": 5},
    }
    cfg = ExperimentConfig.from_dict(old)
    assert cfg.model.dropout == 0.0 and cfg.optim.decay == "l2" and cfg.train.loss == "cross_entropy"


@pytest.mark.parametrize(
    "key, value",
    [
        ("model.dropout", 0.1),
        ("optim.grad_filter", "ema"),
        ("optim.perp_grad", True),
        ("optim.decay", "l1"),
        ("optim.fixed_norm", True),
        ("train.loss", "stablemax"),
        ("train.softmax_collapse", True),
    ],
)
def test_ensemble_rejects_training_variants_it_does_not_implement(key, value):
    from grokscope.config import apply_overrides

    cfg = apply_overrides(get_preset("tiny"), {key: value})
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        check_ensemble_configs([cfg, cfg])
    check_ensemble_configs([apply_overrides(get_preset("tiny"), {"model.init_scale": 2.0})] * 2)  # supported


def test_unordered_pairs_keep_only_a_le_b():
    task = make_task(TaskConfig(p=7, pairs="unordered", train_fraction=0.3))
    assert task.tokens.shape[0] == 7 * 8 // 2 and (task.tokens[:, 0] <= task.tokens[:, 1]).all()
    assert not task.is_full_grid
    assert ((task.tokens[:, 0] + task.tokens[:, 1]) % 7 == task.labels).all()
    for bad in (lambda: TaskConfig(pairs="half"), lambda: TaskConfig(kind="s5", formula="x*y", pairs="unordered")):
        with pytest.raises(ConfigError, match=r"^task\.pairs: "):
            bad()
