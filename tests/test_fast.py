"""The fast path computes the same function and gradients as the general transformer, and is chosen automatically."""

import pytest
import torch

from grokscope.config import ModelConfig, TaskConfig
from grokscope.models import build_model
from grokscope.models.fast import GatherPlan, fast_forward, gather_sum_backward
from grokscope.models.forward import choose_forward
from grokscope.tasks import make_task
from grokscope.training.reference import reference_forward

pytestmark = pytest.mark.usefixtures("one_thread")


def _setup(act="relu", dtype=torch.float32, p=13, seed=0, **model_kw):
    task = make_task(TaskConfig(p=p, train_fraction=0.5))
    kw = dict(d_model=24, n_heads=3, d_head=8, d_mlp=40, act_fn=act, init_seed=seed) | model_kw
    model = build_model(ModelConfig(**kw), d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=3).to(dtype)
    gen = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():  # random weights of a trained-model scale, biases included (the zero buffers too)
        for t in list(model.parameters()) + [b for n, b in model.named_buffers() if n.split(".")[-1].startswith("b_")]:
            t.add_(0.5 * torch.randn(t.shape, generator=gen, dtype=dtype))
    return task, model


@pytest.mark.parametrize("act", ["relu", "gelu", "quadratic"])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-5), (torch.float64, 1e-12)])
def test_fast_path_equals_general_path_values_and_gradients(act, dtype, tol):
    task, model = _setup(act, dtype)
    fast = fast_forward(model, task)
    assert fast is not None
    x = task.train_tokens
    general = model.forward_all(x)[:, -1]
    out = fast(x)
    scale = general.abs().max()
    assert out.shape == general.shape and out.dtype == dtype
    assert ((out - general).abs().max() / scale) < tol
    probe = torch.randn(general.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    params = list(model.parameters())
    g_ref = torch.autograd.grad((general * probe).sum(), params)
    g_fast = torch.autograd.grad((out * probe).sum(), params)
    for (name, _), a, b in zip(model.named_parameters(), g_ref, g_fast):
        assert ((a - b).abs().max() / a.abs().max().clamp_min(1e-30)) < 10 * tol, name


def test_fast_path_on_all_pairs_and_without_grad():
    task, model = _setup()
    fast = fast_forward(model, task)
    with torch.no_grad():
        a, b = fast(task.tokens), model(task.tokens)
    assert torch.allclose(a, b, rtol=0, atol=2e-5 * float(b.abs().max()))
    with torch.no_grad():
        ref = reference_forward(model, task.tokens)
    assert torch.allclose(ref, model.forward_all(task.tokens)[:, -1], rtol=0, atol=2e-5 * float(ref.abs().max()))


def test_fast_path_without_grad_in_row_chunks_is_the_one_pass_result(monkeypatch):
    import grokscope.models.fast as fast_module

    task, model = _setup()
    fast = fast_forward(model, task)
    with torch.no_grad():
        whole = fast(task.tokens)  # 169 rows: one pass
        monkeypatch.setattr(fast_module, "EVAL_CHUNK", 50)  # 4 chunks, the last one short
        chunked = fast(task.tokens)
        general = model(task.tokens)
    assert torch.equal(chunked, whole)
    assert torch.allclose(chunked, general, rtol=0, atol=2e-5 * float(general.abs().max()))


def test_stacked_models_without_grad_in_row_chunks_match_each_model(monkeypatch):
    import grokscope.models.fast as fm

    (task, m0), (_, m1) = _setup(seed=0), _setup(seed=1)
    w = {name: torch.cat([fm.model_tensors(m0)[name], fm.model_tensors(m1)[name]]) for name in fm.PARAM_NAMES}
    tokens = task.tokens.unsqueeze(0).expand(2, -1, -1)  # [K=2, 169, 3]
    plan = fm.FastPlan(tokens, m0.d_vocab, m0.cfg.n_heads)
    monkeypatch.setattr(fm, "EVAL_CHUNK", 50)  # per member: 4 chunks, the last one short
    with torch.no_grad():
        out = fm.fast_logits(fm.fast_tables(w, task.p), plan, "relu")
        expected = torch.stack([m0(task.tokens), m1(task.tokens)])
    assert out.shape == expected.shape
    assert torch.allclose(out, expected, rtol=0, atol=2e-5 * float(expected.abs().max()))


@pytest.mark.parametrize("act", ["relu", "gelu"])
def test_stacked_models_values_and_gradients_match_each_model(act):
    """K = 2 stacked models (the ensemble's path, one member's block after the other) against each model."""
    import grokscope.models.fast as fm

    (task, m0), (_, m1) = _setup(act, torch.float64, seed=0), _setup(act, torch.float64, seed=1)
    w = {
        name: torch.cat([fm.model_tensors(m0)[name], fm.model_tensors(m1)[name]]).detach().requires_grad_()
        for name in fm.PARAM_NAMES
    }
    x = task.train_tokens
    plan = fm.FastPlan(x.unsqueeze(0).expand(2, -1, -1), m0.d_vocab, m0.cfg.n_heads)
    out = fm.fast_logits(fm.fast_tables(w, task.p), plan, act)  # [2, N, C]
    probe = torch.randn(out.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    (out * probe).sum().backward()
    for k, model in enumerate((m0, m1)):
        general = model.forward_all(x)[:, -1]
        assert torch.allclose(out[k], general, rtol=0, atol=1e-12 * float(general.detach().abs().max()))
        named = dict(model.named_parameters())
        grads = torch.autograd.grad((general * probe[k]).sum(), list(named.values()))
        for (name, _), g in zip(named.items(), grads):
            assert ((w[name].grad[k] - g).abs().max() / g.abs().max().clamp_min(1e-30)) < 1e-10, (k, name)


def test_fast_path_backward_runs_once_per_forward():
    """The block's backward overwrites its saved activations with their gradient: a second pass must refuse."""
    task, model = _setup()
    out = fast_forward(model, task)(task.train_tokens)
    loss = out.square().mean()
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="once"):
        loss.backward()


def test_fast_path_passes_other_batches_to_the_model():
    task, model = _setup()
    fast = fast_forward(model, task)
    odd = task.tokens[:5].clone()
    odd[:, 2] = 0  # last token is not '='
    assert torch.equal(fast(odd), model(odd))


def test_gather_sum_backward_matches_autograd_of_the_embedding_bag():
    gen = torch.Generator().manual_seed(0)
    table = torch.randn(9, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    idx = torch.tensor([[0, 3, 8], [1, 2, 8], [0, 7, 8], [4, 5, 6]])
    weights = torch.rand(4, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    grad_out = torch.randn(4, 5, dtype=torch.float64, generator=gen)
    out = torch.nn.functional.embedding_bag(idx, table, per_sample_weights=weights, mode="sum")
    want = torch.autograd.grad(out, (table, weights), grad_out)
    got = gather_sum_backward(GatherPlan(idx, 9), table, weights, grad_out, (True, True))
    assert all(torch.allclose(g, w, atol=1e-12) for g, w in zip(got, want))
    assert gather_sum_backward(GatherPlan(idx, 9), table, weights, grad_out, (False, True))[0] is None


def test_gather_plan_transposed_pattern_is_the_dense_transpose_and_built_only_for_a_gradient():
    idx = torch.tensor([[0, 3, 8], [1, 2, 8], [0, 7, 8], [4, 5, 6], [0, 3, 6]])
    values = torch.arange(1.0, idx.numel() + 1).reshape(idx.shape)
    plan = GatherPlan(idx, 9)
    dense = torch.zeros(5, 9).index_put_((torch.arange(5).repeat_interleave(3), idx.reshape(-1)), values.reshape(-1))
    assert torch.equal(plan.s_matrix(values).to_dense(), dense)
    assert plan._transposed is None  # only the table gradient reads the transposed pattern: built on first use
    assert torch.equal(plan.st_matrix(values).to_dense(), dense.t())
    assert plan._transposed is not None


def test_fast_path_is_chosen_automatically_and_only_where_it_applies(tmp_path):
    task, model = _setup()
    choice = choose_forward(model, task)
    assert choice.path == "fast" and choice.fn is not model
    off = choose_forward(model, task, fast=False)
    assert (off.fn, off.path) == (model, "general")
    # two layers: not covered
    task2, deep = _setup(n_layers=2)
    assert fast_forward(deep, task2) is None
    assert choose_forward(deep, task2).path == "general"
    # the MLP model: not covered
    mlp = build_model(
        ModelConfig(arch="mlp", d_model=16, d_mlp=8), d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=3
    )
    assert fast_forward(mlp, task) is None
    assert choose_forward(mlp, task).path == "general"


def test_training_run_records_the_fast_forward(tmp_path, tiny_config):
    from grokscope.config import apply_overrides
    from grokscope.training import train

    run = train(apply_overrides(tiny_config, {"train.epochs": 5}), tmp_path / "r", progress=False)
    assert run.meta["forward"] == "fast"
