import math

import pytest
import torch

from grokscope.config import ModelConfig, TaskConfig
from grokscope.models import MLPModel, Transformer, build_model
from grokscope.tasks import make_task

TL_KEYS = {
    "embed.W_E": ("d_vocab", "d_model"),
    "pos_embed.W_pos": ("n_ctx", "d_model"),
    "blocks.0.attn.W_Q": ("n_heads", "d_model", "d_head"),
    "blocks.0.attn.W_K": ("n_heads", "d_model", "d_head"),
    "blocks.0.attn.W_V": ("n_heads", "d_model", "d_head"),
    "blocks.0.attn.W_O": ("n_heads", "d_head", "d_model"),
    "blocks.0.attn.b_Q": ("n_heads", "d_head"),
    "blocks.0.attn.b_K": ("n_heads", "d_head"),
    "blocks.0.attn.b_V": ("n_heads", "d_head"),
    "blocks.0.attn.b_O": ("d_model",),
    "blocks.0.mlp.W_in": ("d_model", "d_mlp"),
    "blocks.0.mlp.b_in": ("d_mlp",),
    "blocks.0.mlp.W_out": ("d_mlp", "d_model"),
    "blocks.0.mlp.b_out": ("d_model",),
    "unembed.W_U": ("d_model", "d_vocab_out"),
    "unembed.b_U": ("d_vocab_out",),
}


def small(arch="transformer", **kw):
    cfg = ModelConfig(arch=arch, d_model=24, n_heads=3, d_head=8, d_mlp=40, **kw)
    return build_model(cfg, d_vocab=12, d_vocab_out=11, n_ctx=3)


def test_state_dict_has_hooked_transformer_keys_and_shapes():
    model = small()
    dims = dict(d_vocab=12, d_model=24, n_ctx=3, n_heads=3, d_head=8, d_mlp=40, d_vocab_out=11)
    sd = model.state_dict()
    assert set(sd) == set(TL_KEYS)
    for key, names in TL_KEYS.items():
        assert tuple(sd[key].shape) == tuple(dims[n] for n in names), key
    # only the MLP biases are trainable; the others are frozen zeros
    trainable = {n for n, _ in model.named_parameters()}
    assert {"blocks.0.mlp.b_in", "blocks.0.mlp.b_out"} <= trainable
    assert not any(n.endswith(("b_Q", "b_K", "b_V", "b_O", "b_U")) for n in trainable)


def test_init_is_seeded_with_the_papers_scales():
    cfg = ModelConfig(d_model=128, d_mlp=512, init_seed=3)
    a = build_model(cfg, d_vocab=114, d_vocab_out=113, n_ctx=3)
    b = build_model(cfg, d_vocab=114, d_vocab_out=113, n_ctx=3)
    c = build_model(ModelConfig(d_model=128, d_mlp=512, init_seed=4), d_vocab=114, d_vocab_out=113, n_ctx=3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.embed.W_E, c.embed.W_E)
    assert a.blocks[0].mlp.W_in.std().item() == pytest.approx(1 / math.sqrt(128), rel=0.02)
    assert a.blocks[0].mlp.W_out.std().item() == pytest.approx(1 / math.sqrt(128), rel=0.02)
    assert a.unembed.W_U.std().item() == pytest.approx(1 / math.sqrt(114), rel=0.05)
    assert torch.all(a.blocks[0].mlp.b_in == 0)


def dense_reference(model: Transformer, tokens: torch.Tensor) -> torch.Tensor:
    """An independent float64 computation: one-hot inputs, explicit per-head loops, causal attention at every
    position."""
    sd = {k: v.double() for k, v in model.state_dict().items()}
    d_vocab = sd["embed.W_E"].shape[0]
    onehot = torch.nn.functional.one_hot(tokens, d_vocab).double()  # [B, P, V]
    x = onehot @ sd["embed.W_E"] + sd["pos_embed.W_pos"][: tokens.shape[1]]
    n_pos = tokens.shape[1]
    for layer in range(len(model.blocks)):
        pre = f"blocks.{layer}."
        heads = []
        for h in range(sd[pre + "attn.W_Q"].shape[0]):
            q = x @ sd[pre + "attn.W_Q"][h]
            k = x @ sd[pre + "attn.W_K"][h]
            v = x @ sd[pre + "attn.W_V"][h]
            scores = q @ k.transpose(1, 2) / math.sqrt(q.shape[-1])
            causal = torch.triu(torch.ones(n_pos, n_pos, dtype=torch.bool), 1)
            pattern = torch.softmax(scores.masked_fill(causal, -math.inf), dim=-1)
            heads.append(pattern @ v @ sd[pre + "attn.W_O"][h])
        x = x + sum(heads)
        hidden = torch.relu(x @ sd[pre + "mlp.W_in"] + sd[pre + "mlp.b_in"])
        x = x + hidden @ sd[pre + "mlp.W_out"] + sd[pre + "mlp.b_out"]
    return x @ sd["unembed.W_U"]


@pytest.mark.parametrize("n_layers", [1, 2])
def test_transformer_matches_a_dense_reference(n_layers):
    cfg = ModelConfig(n_layers=n_layers, d_model=24, n_heads=3, d_head=8, d_mlp=40, init_seed=1)
    model = build_model(cfg, d_vocab=12, d_vocab_out=11, n_ctx=3)
    with torch.no_grad():
        for blk in model.blocks:
            blk.mlp.b_in.normal_()
            blk.mlp.b_out.normal_()
    tokens = torch.randint(0, 11, (64, 3))
    tokens[:, 2] = 11
    ref = dense_reference(model, tokens)
    with torch.no_grad():
        assert torch.allclose(model.forward_all(tokens).double(), ref, atol=1e-5)
        assert torch.allclose(model(tokens).double(), ref[:, -1], atol=1e-5)


def test_run_with_cache_uses_transformerlens_hook_names_and_shapes():
    model = small()
    tokens = torch.tensor([[1, 2, 11], [3, 4, 11]])
    logits, cache = model.run_with_cache(tokens)
    assert logits.shape == (2, 11)
    assert cache["hook_embed"].shape == (2, 3, 24)
    assert cache["blocks.0.attn.hook_pattern"].shape == (2, 3, 3, 3)
    assert cache["blocks.0.attn.hook_q"].shape == (2, 3, 3, 8)
    assert cache["blocks.0.mlp.hook_post"].shape == (2, 3, 40)
    assert cache["blocks.0.hook_resid_post"].shape == (2, 3, 24)
    pattern = cache["blocks.0.attn.hook_pattern"]
    assert torch.allclose(pattern.sum(-1), torch.ones(2, 3, 3))
    assert torch.all(pattern[:, :, 0, 1:] == 0)  # causal


def test_hooks_can_replace_activations():
    model = small()
    tokens = torch.tensor([[1, 2, 11]])
    zero_mlp = model.run_with_hooks(tokens, [("blocks.0.hook_mlp_out", lambda x, name: torch.zeros_like(x))])
    _, cache = model.run_with_cache(tokens)
    expected = cache["blocks.0.hook_resid_mid"][:, -1] @ model.unembed.W_U
    assert torch.allclose(zero_mlp, expected, atol=1e-6)
    assert not model._hooks  # hooks are removed afterwards


def test_mlp_model_computes_the_pair_formula():
    model = small("mlp", act_fn="quadratic")
    assert isinstance(model, MLPModel)
    tokens = torch.tensor([[1, 2, 11], [5, 7, 11]])
    E = model.embed.W_E
    hidden = ((E[tokens[:, 0]] + E[tokens[:, 1]]) @ model.mlp.W_in) ** 2
    assert torch.allclose(model(tokens), hidden @ model.mlp.W_out @ model.unembed.W_U, atol=1e-5)
    tied = small("mlp", tie_unembed=True)
    assert "unembed.W_U" not in tied.state_dict()
    assert torch.equal(tied.W_U, tied.embed.W_E[:11].T)


def test_transformerlens_loads_a_checkpoint_by_name():
    tl = pytest.importorskip("transformer_lens", reason="TransformerLens not installed (extra 'tl' or 'dev')")
    task = make_task(TaskConfig(p=13, train_fraction=0.5))
    cfg = ModelConfig(d_model=32, n_heads=4, d_head=8, d_mlp=64, init_seed=2)
    model = build_model(cfg, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=3)
    with torch.no_grad():
        model.blocks[0].mlp.b_in.normal_()
    hooked = tl.HookedTransformer(
        tl.HookedTransformerConfig(
            n_layers=1,
            d_model=32,
            d_head=8,
            n_heads=4,
            d_mlp=64,
            d_vocab=task.d_vocab,
            d_vocab_out=task.d_vocab_out,
            n_ctx=3,
            act_fn="relu",
            normalization_type=None,
            device="cpu",
        )
    )
    hooked.load_state_dict(model.state_dict(), strict=False)
    with torch.no_grad():
        ours = model(task.tokens)
        theirs = hooked(task.tokens)[:, -1]
    assert torch.allclose(ours, theirs, atol=1e-5)
