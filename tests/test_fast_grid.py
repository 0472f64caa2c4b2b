"""The fast path against the general path over the grid of tasks and shapes it accepts, its refusals, and PlanCache.

tests/test_fast.py compares the two paths at one shape (a+b mod 13, 3 heads x 8 = d_model). Here: tasks with rows
left out (division, a conditional formula with division, unordered pairs), one head, n_heads x d_head below and above
d_model, every activation, and p >= 46, where an evaluation over all pairs crosses the no-grad path's row chunk
(EVAL_CHUNK). Values and the gradient of every parameter are compared in float64 against ``model.forward_all`` (the
plain full-sequence computation), which shares no code with the fast path's tables.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import grokscope.models.fast as fm
from grokscope.config import ModelConfig, TaskConfig
from grokscope.models import build_model
from grokscope.tasks import make_task

DT = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(task, *, seed=0, d_model=12, n_heads=3, d_head=5, d_mlp=16, act="relu", **kw):
    """A model for ``task`` with random weights of a trained-model scale, the zero bias buffers made non-zero too."""
    cfg = ModelConfig(d_model=d_model, n_heads=n_heads, d_head=d_head, d_mlp=d_mlp, act_fn=act, init_seed=seed, **kw)
    model = build_model(cfg, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=task.n_ctx).to(DT)
    gen = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if name in dict(model.named_parameters()) or name.split(".")[-1].startswith("b_"):
                t.add_(0.5 * torch.randn(t.shape, generator=gen, dtype=DT))
    return model


# the tasks the fast path accepts: id -> (TaskConfig kwargs, which (a, b) pairs are rows, decided here by hand)
TASKS = {
    "add-13": (dict(formula="a+b", p=13), lambda a, b: True),
    "div-13": (dict(formula="a/b", p=13), lambda a, b: b != 0),
    "cond-13": (
        dict(formula="a/b if a is odd else a-b", p=13),
        lambda a, b: a % 2 == 0 or b != 0,
    ),  # divides for odd a only
    "unordered-13": (dict(formula="a+b", p=13, pairs="unordered"), lambda a, b: a <= b),
    "mul-47": (dict(formula="a*b", p=47), lambda a, b: True),  # > EVAL_CHUNK rows
    "div-47": (dict(formula="a/b", p=47), lambda a, b: b != 0),  # > EVAL_CHUNK rows
    "unordered-67": (dict(formula="a-b", p=67, pairs="unordered"), lambda a, b: a <= b),  # > EVAL_CHUNK rows
}

# (id, model kwargs): one head; n_heads x d_head below d_model; above d_model; equal with a wider MLP
SHAPES = {
    "1x8-d8": dict(d_model=8, n_heads=1, d_head=8, d_mlp=12),
    "3x5-d12": dict(d_model=12, n_heads=3, d_head=5, d_mlp=16),
    "2x12-d8": dict(d_model=8, n_heads=2, d_head=12, d_mlp=10),
    "4x4-d16": dict(d_model=16, n_heads=4, d_head=4, d_mlp=24),
}


def _task(name):
    kw, _ = TASKS[name]
    return make_task(TaskConfig(train_fraction=0.5, split_seed=1, **kw))


def _expected_pairs(name: str) -> list[tuple[int, int]]:
    """The rows each task must have, in row-major (a, b) order, by brute force from the predicate above."""
    kw, keep = TASKS[name]
    return [(a, b) for a in range(kw["p"]) for b in range(kw["p"]) if keep(a, b)]


@pytest.mark.parametrize("name", list(TASKS))
def test_the_grid_tasks_have_the_rows_this_test_expects(name):
    """Guards the grid: missing rows where promised, and > EVAL_CHUNK rows where the chunking is to be crossed."""
    task = _task(name)
    assert [tuple(r) for r in task.tokens[:, :2].tolist()] == _expected_pairs(name)
    assert bool((task.tokens[:, 2] == task.p).all())
    if name.endswith(("-47", "-67")):
        assert task.tokens.shape[0] > fm.EVAL_CHUNK
    if not name.startswith(("add", "mul")):
        assert not task.is_full_grid  # rows are missing


def _assert_values_and_gradients(model, task, tokens, tol=1e-11):
    fast = fm.fast_forward(model, task)
    assert fast is not None
    general = model.forward_all(tokens)[:, -1]
    out = fast(tokens)
    assert out.shape == general.shape == (tokens.shape[0], task.d_vocab_out) and out.dtype == DT
    scale = float(general.detach().abs().max())
    assert float((out - general).detach().abs().max()) <= tol * scale
    probe = torch.randn(general.shape, generator=torch.Generator().manual_seed(7), dtype=DT)
    named = dict(model.named_parameters())
    g_ref = torch.autograd.grad((general * probe).sum(), list(named.values()))
    g_fast = torch.autograd.grad((out * probe).sum(), list(named.values()))
    for (name, _), a, b in zip(named.items(), g_ref, g_fast):
        assert a.shape == b.shape, name
        assert float((a - b).abs().max()) <= 100 * tol * max(float(a.abs().max()), 1e-30), name
    return fast


@pytest.mark.parametrize("act", ["relu", "gelu", "quadratic"])
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("name", [n for n in TASKS if n.endswith("-13")])
def test_fast_path_equals_general_path_over_tasks_shapes_and_activations(name, shape, act):
    task = _task(name)
    model = _model(task, act=act, seed=len(name) + len(shape), **SHAPES[shape])
    _assert_values_and_gradients(model, task, task.train_tokens)


@pytest.mark.parametrize("act", ["relu", "gelu", "quadratic"])
@pytest.mark.parametrize("name", [n for n in TASKS if not n.endswith("-13")])
def test_fast_path_equals_general_path_past_the_evaluation_chunk(name, act):
    """p >= 46: the gradient path over all rows (one block) and the no-grad path in EVAL_CHUNK row chunks both
    equal the general path, and the chunked no-grad logits are bitwise the one-pass logits."""
    task = _task(name)
    model = _model(task, act=act, seed=3, **SHAPES["2x12-d8"])
    n = task.tokens.shape[0]
    assert n > fm.EVAL_CHUNK
    fast = _assert_values_and_gradients(model, task, task.tokens)  # every row, with gradient: one pass
    with torch.no_grad():
        chunked = fast(task.tokens)
        general = model(task.tokens)
    with torch.enable_grad():
        one_pass = fast(task.tokens).detach()
    assert torch.equal(chunked, one_pass)
    assert float((chunked - general).abs().max()) <= 1e-11 * float(general.abs().max())
    # the rows after the first chunk are the ones a wrong chunk offset would spoil: check them on their own too
    tail = slice(fm.EVAL_CHUNK, n)
    assert float((chunked[tail] - general[tail]).abs().max()) <= 1e-11 * float(general[tail].abs().max())


def test_fast_path_on_a_batch_that_is_not_the_task_rows():
    """A training batch (random rows, repeats, any order) of a task with missing rows: values and gradients."""
    task = _task("div-13")
    model = _model(task, act="gelu", **SHAPES["1x8-d8"])
    rows = torch.randint(0, task.tokens.shape[0], (40,), generator=torch.Generator().manual_seed(0))
    _assert_values_and_gradients(model, task, task.tokens[rows])


# --------------------------------------------------------------------------- what the fast path must refuse


def _fake_task(tokens, p, d_vocab_out=None):
    return SimpleNamespace(tokens=tokens, p=p, d_vocab=p + 1, d_vocab_out=p if d_vocab_out is None else d_vocab_out)


def test_is_fast_eligible_accepts_the_grid():
    for name in TASKS:
        task = _task(name)
        for shape in SHAPES.values():
            assert fm.is_fast_eligible(_model(task, **shape), task), (name, shape)


@pytest.mark.parametrize(
    "why",
    [
        "two layers",
        "attention only",
        "dropout",
        "mlp arch",
        "multi task",
        "sequence task",
        "s5 (no p)",
        "vocab mismatch",
        "last token not =",
        "token out of range",
        "negative token",
        "no rows",
        "four columns",
    ],
)
def test_is_fast_eligible_refuses_what_it_does_not_compute(why):
    task = _task("add-13")
    model = _model(task)
    if why == "two layers":
        model = _model(task, n_layers=2)
    elif why == "attention only":
        model = _model(task, attn_only=True)
    elif why == "dropout":
        model = _model(task, dropout=0.1)
    elif why == "mlp arch":
        model = build_model(
            ModelConfig(arch="mlp", d_model=8, d_mlp=8), d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=3
        )
    elif why == "multi task":  # [a, op, b, =]
        task = make_task(TaskConfig(kind="multi", formula="a+b;a-b", p=7))
        model = _model(task)
    elif why == "sequence task":  # scored at every position, though its rows are [x, y, =] here
        task = make_task(TaskConfig(kind="skip_trigram", seq_len=3, n_tokens=8, n_examples=20))
        model = _model(task)
    elif why == "s5 (no p)":
        task = make_task(TaskConfig(kind="s5", formula="x*y"))
        model = _model(task, d_mlp=4)
    elif why == "vocab mismatch":
        model = _model(_task("div-47"))  # a model for mod 47 on a mod 13 task
    else:
        tokens = task.tokens.clone()
        if why == "last token not =":
            tokens[5, 2] = 0
        elif why == "token out of range":
            tokens[5, 0] = task.d_vocab  # the embedding has d_vocab rows
        elif why == "negative token":
            tokens[5, 1] = -1
        elif why == "no rows":
            tokens = tokens[:0]
        elif why == "four columns":
            tokens = torch.cat([tokens, tokens[:, :1]], dim=1)
        task = _fake_task(tokens, 13)
        assert fm.is_fast_eligible(model, _fake_task(make_task(TaskConfig(p=13)).tokens, 13))  # only the change refuses
    assert not fm.is_fast_eligible(model, task)
    assert fm.fast_forward(model, task) is None


# --------------------------------------------------------------------------- PlanCache


def _tokens(task, seed, n=20):
    rows = torch.randperm(task.tokens.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    return task.tokens[rows].unsqueeze(0)  # [K=1, n, 3]


def test_plan_cache_hits_by_content_not_identity():
    task = _task("add-13")
    cache = fm.PlanCache(task.d_vocab, 3)
    a = _tokens(task, 0)
    plan = cache.get(a)
    assert cache.get(a.clone()) is plan  # an equal tensor, another object: a hit
    assert cache.get(a.clone().contiguous()) is plan
    b = a.clone()
    b[0, 3, 1] = (b[0, 3, 1] + 1) % task.p  # one token differs
    assert cache.get(b) is not plan
    assert cache.get(a[:, :-1]) is not plan  # another shape (a prefix of the same rows)
    # the cache keeps a copy: changing the caller's tensor in place does not change what it matches
    c = _tokens(task, 1)
    plan_c = cache.get(c)
    original = c.clone()
    c[0, 0, 0] = (c[0, 0, 0] + 1) % task.p
    assert cache.get(c) is not plan_c
    assert cache.get(original) is plan_c


def test_plan_cache_evicts_the_least_recently_used_and_keeps_its_size():
    task = _task("add-13")
    cache = fm.PlanCache(task.d_vocab, 3, size=3)
    t = [_tokens(task, s) for s in range(5)]
    p0, p1, p2 = cache.get(t[0]), cache.get(t[1]), cache.get(t[2])
    assert [plan for _, plan in cache.items] == [p2, p1, p0]  # most recent first
    assert cache.get(t[0]) is p0  # a hit moves t0 to the front: t1 is now the least recently used
    assert [plan for _, plan in cache.items] == [p0, p2, p1]
    p3 = cache.get(t[3])  # evicts t1
    assert len(cache.items) == 3 and [plan for _, plan in cache.items] == [p3, p0, p2]
    assert cache.get(t[2]) is p2 and cache.get(t[0]) is p0 and cache.get(t[3]) is p3  # the survivors hit
    p1_again = cache.get(t[1])  # t1 was evicted: a new plan, which evicts the least recent (t2)
    assert p1_again is not p1 and len(cache.items) == 3
    assert [plan for _, plan in cache.items] == [p1_again, p3, p0]
    for key, _ in cache.items:
        assert any(torch.equal(key, x) for x in (t[1], t[3], t[0]))
    one = fm.PlanCache(task.d_vocab, 3, size=1)
    q0 = one.get(t[0])
    one.get(t[1])
    assert len(one.items) == 1 and one.get(t[0]) is not q0


def test_a_cached_plan_gives_the_logits_and_gradients_of_a_fresh_plan_as_the_weights_change():
    """A plan depends on the tokens only: reused after the weights change (as in training), it gives exactly what a
    new plan gives, values and gradients (its transposed pattern, built by the first backward, is reused too)."""
    task = _task("cond-13")
    model = _model(task, act="gelu", **SHAPES["3x5-d12"])
    x = task.train_tokens.unsqueeze(0)
    cache = fm.PlanCache(model.d_vocab, model.cfg.n_heads)
    named = dict(model.named_parameters())

    def logits_and_grads(plan):
        out = fm.fast_logits(fm.fast_tables(fm.model_tensors(model), task.p), plan, "gelu")
        return out.detach(), torch.autograd.grad(out.square().sum(), list(named.values()))

    for step in range(3):
        cached = cache.get(x.clone())
        fresh = fm.FastPlan(x, model.d_vocab, model.cfg.n_heads)
        (out_c, g_c), (out_f, g_f) = logits_and_grads(cached), logits_and_grads(fresh)
        assert torch.equal(out_c, out_f), step
        assert all(torch.equal(a, b) for a, b in zip(g_c, g_f)), step
        general = model(x[0]).detach()
        assert float((out_c[0] - general).abs().max()) <= 1e-11 * float(general.abs().max())
        with torch.no_grad():  # change the weights, keep the plan
            for p in named.values():
                p.mul_(0.9).add_(0.01)
    assert len(cache.items) == 1 and cache.items[0][1]._members is not None
    assert cache.items[0][1].gather._transposed is not None


def test_fast_forward_reuses_its_plan_for_repeated_batches_and_follows_the_weights():
    task = _task("unordered-13")
    model = _model(task, **SHAPES["4x4-d16"])
    fast = fm.fast_forward(model, task)
    built = []
    real = fm.FastPlan

    class Counting(real):
        def __init__(self, *args):
            built.append(1)
            super().__init__(*args)

    fm.FastPlan, saved = Counting, fm.FastPlan
    try:
        for _ in range(3):
            out = fast(task.train_tokens.clone())
            general = model(task.train_tokens)
            assert float((out - general).detach().abs().max()) <= 1e-11 * float(general.detach().abs().max())
            with torch.no_grad():
                model.embed.W_E.add_(0.1)
        fast(task.test_tokens)
    finally:
        fm.FastPlan = saved
    assert len(built) == 2  # one plan for the training rows (three calls), one for the test rows
