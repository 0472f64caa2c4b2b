"""TransformerLens interop (issue 8): grokscope checkpoints in TransformerLens, TransformerLens models in grokscope.

Tests that build a HookedTransformer skip when TransformerLens (extra ``tl``) is absent; the state-dict and CLI
error paths need only grokscope.
"""

import dataclasses
import json
import math
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F

from grokscope import (
    ConfigError,
    apply_overrides,
    from_hooked_transformer,
    load_run,
    to_hooked_transformer,
    train,
)
from grokscope.analysis.run import analyze_model
from grokscope.cli import main
from grokscope.interop import hooked_transformer_config
from grokscope.models import build_model
from grokscope.models.fast import fast_forward
from grokscope.presets import get_preset, tiny
from grokscope.tasks import make_task


def _tl():
    return pytest.importorskip("transformer_lens", reason="TransformerLens not installed (extra 'tl' or 'dev')")


def _hooked(tl, cfg, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TransformerLens 3 deprecates HookedTransformer
        return tl.HookedTransformer(cfg, **kw)


def _state(cfg, **tl_buffers):
    """A freshly initialised grokscope state dict for ``cfg`` (TransformerLens keys) plus TransformerLens's buffers."""
    task = make_task(cfg.task)
    model = build_model(cfg.model, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=task.n_ctx)
    state = dict(model.state_dict())
    state["blocks.0.attn.IGNORE"] = torch.tensor(-math.inf)
    state["blocks.0.attn.mask"] = torch.tril(torch.ones(3, 3, dtype=torch.bool))
    return state


def _fourier_norms(x, dim):
    """Per-frequency norms sqrt(cos^2 + sin^2) of the orthonormal real Fourier transform along ``dim``, from the FFT."""
    p = x.shape[dim]
    spec = torch.fft.fft(x.to(torch.float64), dim=dim).movedim(dim, 0)[1 : (p - 1) // 2 + 1]
    return math.sqrt(2 / p) * spec.abs().reshape(spec.shape[0], -1).norm(dim=1)


# --------------------------------------------------------------------------- grokscope -> TransformerLens


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    cfg = apply_overrides(tiny(), {"train.epochs": 10, "train.checkpoint_every": 5, "train.measure_every": 0})
    return train(cfg, tmp_path_factory.mktemp("interop") / "run", progress=False)


def test_checkpoint_runs_in_transformer_lens_with_identical_logits_and_activations(tiny_run):
    tl = _tl()
    task = tiny_run.task()
    ours = tiny_run.load_model()
    hooked = to_hooked_transformer(tiny_run)
    assert isinstance(hooked, tl.HookedTransformer) and not hooked.training
    assert float(ours.blocks[0].mlp.b_in.detach().abs().max()) > 0  # trained weights, not the initialisation
    with torch.no_grad():
        logits, cache = ours.run_with_cache(task.tokens)
        tl_logits, tl_cache = hooked.run_with_cache(task.tokens)
    torch.testing.assert_close(tl_logits[:, -1], logits, atol=1e-5, rtol=0)
    for name in (
        "hook_embed",
        "blocks.0.attn.hook_pattern",
        "blocks.0.attn.hook_z",
        "blocks.0.mlp.hook_pre",
        "blocks.0.mlp.hook_post",
        "blocks.0.hook_resid_post",
    ):
        torch.testing.assert_close(tl_cache[name], cache[name], atol=1e-5, rtol=0, msg=name)

    # float64: the same computation, equal to rounding
    hooked64 = to_hooked_transformer(tiny_run.dir, dtype=torch.float64)
    with torch.no_grad():
        diff = (hooked64(task.tokens)[:, -1] - tiny_run.load_model().double()(task.tokens)).abs().max().item()
    assert hooked64.cfg.dtype == torch.float64 and diff < 1e-12

    # an earlier step by path
    early = to_hooked_transformer(str(tiny_run.dir), step=5)
    with torch.no_grad():
        torch.testing.assert_close(early(task.tokens)[:, -1], tiny_run.load_model(5)(task.tokens), atol=1e-5, rtol=0)
        assert (early(task.tokens)[:, -1] - logits).abs().max() > 1e-3  # a different checkpoint


def test_hooked_transformer_config_refuses_what_transformer_lens_cannot_represent():
    _tl()
    with pytest.raises(ConfigError, match="model.arch"):
        hooked_transformer_config(get_preset("pair-mlp"))
    with pytest.raises(ConfigError, match="model.act_fn"):
        hooked_transformer_config(apply_overrides(tiny(), {"model.act_fn": "quadratic"}))
    cfg = hooked_transformer_config(apply_overrides(tiny(), {"model.attn_only": True}), dtype=torch.float64)
    assert cfg.attn_only and cfg.normalization_type is None and cfg.dtype == torch.float64
    assert (cfg.d_vocab, cfg.d_vocab_out, cfg.n_ctx, cfg.d_model, cfg.n_heads, cfg.d_head) == (14, 13, 3, 32, 2, 16)


def test_missing_transformer_lens_names_the_extra(tiny_run, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformer_lens", None)  # import fails as if not installed
    with pytest.raises(ImportError, match=r'pip install "grokscope\[tl\]"'):
        to_hooked_transformer(tiny_run)
    # the state-dict direction does not need TransformerLens
    model = from_hooked_transformer(tiny_run.load_state_dict(), tiny_run.config)
    assert torch.equal(model.embed.W_E, tiny_run.load_model().embed.W_E)


def test_import_grokscope_does_not_import_transformer_lens():
    code = "import sys, grokscope; grokscope.to_hooked_transformer; print('transformer_lens' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------- TransformerLens -> grokscope


#: tiny's model and task with 80% of the pairs for training (the split TransformerLens trains on below).
TL_CONFIG = apply_overrides(tiny(), {"task.train_fraction": 0.8})


@pytest.fixture(scope="module")
def tl_trained(tmp_path_factory):
    """A HookedTransformer built and trained with TransformerLens alone (every bias trainable) on tiny's task."""
    tl = _tl()
    task = make_task(TL_CONFIG.task)
    model = _hooked(
        tl,
        tl.HookedTransformerConfig(
            n_layers=1,
            d_model=32,
            d_head=16,
            n_heads=2,
            d_mlp=64,
            d_vocab=14,
            d_vocab_out=13,
            n_ctx=3,
            act_fn="relu",
            normalization_type=None,
            device="cpu",
            seed=1,
        ),
    )
    opt = torch.optim.AdamW(model.parameters(), lr=3e-2, weight_decay=1.0, betas=(0.9, 0.98))
    for _ in range(250):  # generalises (test accuracy ~0.9) with key frequencies 1 and 5
        loss = F.cross_entropy(model(task.train_tokens)[:, -1], task.train_labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    path = tmp_path_factory.mktemp("tl") / "tl_model.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model, path


def test_transformer_lens_model_loads_with_its_trained_biases(tl_trained):
    hooked, _ = tl_trained
    cfg, task = tiny(), make_task(tiny().task)
    for name in ("blocks.0.attn.b_Q", "blocks.0.attn.b_K", "blocks.0.attn.b_V", "blocks.0.attn.b_O", "unembed.b_U"):
        assert hooked.state_dict()[name].abs().max() > 1e-3, name  # TransformerLens trained them
    with torch.no_grad():
        want = hooked(task.tokens)[:, -1]
        for source in (hooked, hooked.state_dict()):
            model = from_hooked_transformer(source, cfg)
            torch.testing.assert_close(model(task.tokens), want, atol=1e-5, rtol=1e-6)  # float32 rounding of logits ~50
            torch.testing.assert_close(model.forward_all(task.tokens)[:, -1], want, atol=1e-5, rtol=1e-6)
        fast = fast_forward(model, task)  # the training loop's fast path reads the bias buffers too
        assert fast is not None
        torch.testing.assert_close(fast(task.tokens), want, atol=1e-5, rtol=1e-6)
        assert torch.equal(model.blocks[0].attn.b_K, hooked.blocks[0].attn.b_K)


def test_cli_analyses_a_transformer_lens_checkpoint(tl_trained, capsys):
    hooked, path = tl_trained
    cfg, task = TL_CONFIG, make_task(TL_CONFIG.task)
    argv = ["analyze", "--checkpoint", str(path), "--preset", "tiny", "--set", "task.train_fraction=0.8", "--quiet"]
    assert main(argv) == 0
    out = path.with_name("tl_model-analysis")
    data = json.loads((out / "analysis.json").read_text())

    # independent numbers from the TransformerLens model itself
    p = 13
    with torch.no_grad():
        logits = hooked(task.tokens)[:, -1].to(torch.float64)
    assert data["losses"]["loss"] == pytest.approx(F.cross_entropy(logits, task.labels).item(), rel=1e-5)
    assert data["losses"]["test_loss"] == pytest.approx(
        F.cross_entropy(logits[task.test_idx], task.labels[task.test_idx]).item(), rel=1e-5
    )
    assert data["losses"]["acc"] == pytest.approx((logits.argmax(-1) == task.labels).double().mean().item())
    we_norms = _fourier_norms(hooked.W_E.detach()[:p], 0)
    assert data["W_E_frequency_norms"] == pytest.approx(we_norms.tolist(), rel=1e-4)
    w_l = hooked.blocks[0].mlp.W_out.detach().double() @ hooked.W_U.detach().double()  # [d_mlp, p]
    wl_norms = _fourier_norms(w_l, 1)
    assert data["W_L_frequency_norms"] == pytest.approx(wl_norms.tolist(), rel=1e-4)
    keys = data["key_frequencies"]
    assert keys, "the W_L_dft rule found no key frequencies"
    top = (torch.argsort(wl_norms, descending=True)[: len(keys)] + 1).tolist()
    assert sorted(keys) == sorted(top)  # the largest-gap rule keeps the largest W_L frequencies
    assert data["step"] is None and data["source"]["preset"] == "tiny"  # the file names no step

    # OUT is a run directory: the checkpoint reloads with the TransformerLens weights (biases included)
    run = load_run(out)
    assert run.checkpoints == [0] and run.config == cfg
    with torch.no_grad():
        torch.testing.assert_close(run.load_model(0)(task.tokens).double(), logits, atol=1e-5, rtol=1e-6)
    # the Python API returns the same analysis
    api = analyze_model(hooked, cfg)
    assert api["key_frequencies"] == keys and api["losses"] == pytest.approx(data["losses"])

    # never overwritten: a second call refuses and leaves the folder as it was
    before = (out / "analysis.json").read_bytes()
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and err.count("\n") == 1
    assert (out / "analysis.json").read_bytes() == before


def test_hooked_transformer_with_another_activation_is_refused(tl_trained):
    tl = _tl()
    hooked, _ = tl_trained
    gelu = _hooked(tl, dataclasses.replace(hooked.cfg, act_fn="gelu"))
    with pytest.raises(ConfigError, match=r"cfg\.act_fn is 'gelu'.*'relu'"):
        from_hooked_transformer(gelu, tiny())


# --------------------------------------------------------------------------- bad inputs (no TransformerLens needed)


def _cli_error(capsys, argv):
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def _save(state, path):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def test_pickle_checkpoints_are_refused_with_the_conversion(tmp_path, capsys):
    pt = tmp_path / "model.pt"
    pt.write_bytes(b"\x80\x04\x95\x00")  # never unpickled
    err = _cli_error(capsys, ["analyze", "--checkpoint", str(pt), "--preset", "tiny"])
    assert "pickle" in err and 'safetensors.torch.save_file(model.state_dict(), "model.safetensors")' in err
    disguised = tmp_path / "model.weights"
    disguised.write_bytes(b"PK\x03\x04" + bytes(60))  # torch.save's zip archive under another name
    assert "pickle" in _cli_error(capsys, ["analyze", "--checkpoint", str(disguised), "--preset", "tiny"])
    assert not list(tmp_path.glob("*-analysis"))


def test_state_dict_mismatches_name_the_key_and_shapes(tmp_path, capsys):
    cfg = tiny()
    small = apply_overrides(cfg, {"model.d_mlp": 32})
    path = _save(_state(small), tmp_path / "small.safetensors")
    err = _cli_error(capsys, ["analyze", "--checkpoint", str(path), "--preset", "tiny"])
    assert "blocks.0.mlp.W_in has shape [32, 32], the config expects [32, 64] = [d_model, d_mlp]" in err
    # the overrides that describe the model fix it
    assert main(["analyze", "--checkpoint", str(path), "--preset", "tiny", "--set", "model.d_mlp=32", "--quiet"]) == 0

    state = _state(cfg)
    del state["unembed.W_U"]
    err = _cli_error(
        capsys, ["analyze", "--checkpoint", str(_save(state, tmp_path / "missing.safetensors")), "--preset", "tiny"]
    )
    assert "missing 1 key(s)" in err and "unembed.W_U [32, 13]" in err

    state = _state(cfg)
    state["blocks.0.ln1.w"] = torch.ones(32)
    err = _cli_error(
        capsys, ["analyze", "--checkpoint", str(_save(state, tmp_path / "ln.safetensors")), "--preset", "tiny"]
    )
    assert "blocks.0.ln1.w" in err and "LayerNorm" in err

    with pytest.raises(
        ConfigError, match=r"embed\.W_E has shape \[14, 32\], the config expects \[54, 32\] = \[d_vocab, d_model\]"
    ):
        from_hooked_transformer(_state(cfg), apply_overrides(cfg, {"task.p": 53}))
    assert not (tmp_path / "ln-analysis").exists() and not (tmp_path / "missing-analysis").exists()


def test_absent_attention_biases_read_as_zero(tmp_path):
    cfg = tiny()
    state = {k: v for k, v in _state(cfg).items() if k.rsplit(".", 1)[-1] not in ("b_Q", "b_K", "b_V", "b_O", "b_U")}
    model = from_hooked_transformer(state, cfg)
    assert float(model.blocks[0].attn.b_Q.abs().sum()) == 0 and torch.equal(model.unembed.W_U, state["unembed.W_U"])


def test_cli_argument_errors(tmp_path, tiny_run, capsys):
    path = _save(_state(tiny()), tmp_path / "m.safetensors")
    assert "give a RUN directory, or --checkpoint FILE --preset NAME" in _cli_error(capsys, ["analyze"])
    assert "not both" in _cli_error(
        capsys, ["analyze", str(tiny_run.dir), "--checkpoint", str(path), "--preset", "tiny"]
    )
    assert "--preset" in _cli_error(capsys, ["analyze", "--checkpoint", str(path)])
    assert "--step" in _cli_error(capsys, ["analyze", "--checkpoint", str(path), "--preset", "tiny", "--step", "3"])
    assert "model.arch" in _cli_error(capsys, ["analyze", "--checkpoint", str(path), "--preset", "pair-mlp"])
    assert "go with --checkpoint" in _cli_error(capsys, ["analyze", str(tiny_run.dir), "--preset", "tiny"])
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("keep")
    assert "already exists" in _cli_error(
        capsys, ["analyze", "--checkpoint", str(path), "--preset", "tiny", "--out", str(tmp_path / "busy")]
    )
    assert (tmp_path / "busy" / "x").read_text() == "keep" and not (tmp_path / "m-analysis").exists()
