"""grokscope's AdamW: bitwise torch.optim.AdamW's fused update, or its single-tensor update where no fused kernel
exists."""

import sys

import pytest
import torch

import grokscope.training.adamw as adamw
from grokscope.training.adamw import AdamW

KW = dict(lr=1e-3, betas=(0.9, 0.98), eps=1e-8, weight_decay=1.0)


def _train(make, steps=25, seed=0):
    """Parameters after ``steps`` updates with scripted gradients of changing scale, a warm-up and a frozen tensor."""
    gen = torch.Generator().manual_seed(seed)
    params = [
        torch.randn(40, 7, generator=gen).requires_grad_(),
        torch.randn(13, generator=gen).requires_grad_(),
        torch.randn(3, generator=gen).requires_grad_(),
    ]
    opt = make(params)
    for i in range(steps):
        for p in params[:2]:  # params[2] never gets a gradient: torch leaves it (and its state) alone
            p.grad = torch.randn(p.shape, generator=gen) * 10.0 ** -(i % 6)
        opt.param_groups[0]["lr"] = KW["lr"] * min((i + 1) / 10, 1.0)
        opt.step()
    return params, opt


def test_the_fused_update_is_bitwise_torchs():
    ours, opt = _train(lambda ps: AdamW(ps, **KW))
    theirs, ref = _train(lambda ps: torch.optim.AdamW(ps, fused=True, **KW))
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)
    for a, b in zip(ours[:2], theirs[:2]):  # the state torch keeps, under torch's keys and dtypes
        sa, sb = opt.state[a], ref.state[b]
        assert set(sa) == set(sb) == {"step", "exp_avg", "exp_avg_sq"}
        assert all(torch.equal(sa[k], sb[k]) and sa[k].dtype == sb[k].dtype for k in sa)
    assert ours[2] not in opt.state


def test_without_the_fused_kernel_the_update_is_bitwise_torchs_single_tensor_one(monkeypatch):
    monkeypatch.setattr(adamw, "_fused_kernel", lambda: None)
    ours, _ = _train(lambda ps: AdamW(ps, **KW))
    theirs, _ = _train(lambda ps: torch.optim.AdamW(ps, foreach=False, **KW))
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)


def test_closed_form_first_step():
    """Step 1 from zero moments: m = (1-b1) g, v = (1-b2) g^2, so the update is lr * g / (|g| + eps (1-b2)^0.5)
    after the decay p (1 - lr wd): for |g| >> eps, p1 = p0 (1 - lr wd) - lr sign(g)."""
    p = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64, requires_grad=True)
    opt = AdamW([p], lr=0.1, betas=(0.9, 0.99), eps=1e-12, weight_decay=0.5)
    p.grad = torch.tensor([3.0, -4.0, 1e-3], dtype=torch.float64)
    opt.step()
    expected = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) * (1 - 0.1 * 0.5) - 0.1 * torch.tensor(
        [1.0, -1.0, 1.0], dtype=torch.float64
    )
    assert torch.allclose(p.detach(), expected, rtol=0, atol=1e-9)
    assert float(opt.state[p]["step"]) == 1.0


def test_zero_grad_and_refusals():
    p = torch.zeros(2, requires_grad=True)
    opt = AdamW([p], lr=1e-3)
    p.grad = torch.ones(2)
    opt.zero_grad(set_to_none=False)
    assert torch.equal(p.grad, torch.zeros(2))
    opt.zero_grad()
    assert p.grad is None
    with pytest.raises(ValueError, match="no parameters"):
        AdamW([], lr=1e-3)


def test_training_does_not_import_torch_dynamo(tmp_path):
    """The reason this optimiser exists: torch.optim imports torch._dynamo (1.4 s) on first use."""
    import subprocess

    code = (
        "import sys, grokscope\n"
        "cfg = grokscope.apply_overrides(grokscope.get_preset('tiny'), {'train.epochs': 3})\n"
        f"grokscope.train(cfg, {str(tmp_path / 'run')!r}, progress=False)\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"
