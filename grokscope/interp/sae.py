"""Sparse autoencoders (dictionary learning) on MLP activations, and how their features relate to the circuit.

Model (one hidden layer, untied, decoder rows of unit norm)::

    f(x)  = act(W_enc^T (x - b_dec) + b_enc)          [n_features]
    x_hat = f(x) @ W_dec + b_dec                       W_dec [n_features, d]

``kind="l1"``: act = ReLU, loss = mean ||x - x_hat||^2 / d_scale + l1 * mean ||f||_1.
``kind="topk"``: act = keep the k largest of ReLU(pre), zero the rest; loss = mean ||x - x_hat||^2 / d_scale.
(d_scale = the data's mean squared norm around its mean, so the reconstruction term is the fraction of variance
unexplained and ``l1`` has the same meaning for any activation scale.) Adam on minibatches; decoder rows are
renormalised to unit length after every step (so the L1 penalty cannot be dodged by shrinking f). Weights are
initialised from a seeded generator: W_dec rows random unit vectors, W_enc = W_dec^T, b_dec = data mean.

Feature analysis over a modular task's p*p inputs: each feature's activation over the grid is analysed exactly
as a neuron (:func:`grokscope.measures.neuron_frequency_fractions`): a feature *aligns with frequency k*
when >= 85% of its variance lies in k's 3x3 2D-DFT block; features are counted per key frequency.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from grokscope.interp.probes import activations_at, default_hook
from grokscope.measures import (
    NEURON_FVE_THRESHOLD,
    fourier_transform,
    fourier_transform_2d,
    grid_order,
    neuron_logit_map,
)
from grokscope.models import Model

__all__ = [
    "SAE",
    "SAEComparison",
    "SAEConfig",
    "SAEFeatures",
    "SAEReport",
    "compare_saes",
    "evaluate_sae",
    "feature_frequencies",
    "sae_on_checkpoint",
    "splice_accuracy",
    "train_sae",
]


@dataclass(frozen=True)
class SAEConfig:
    """Training settings of an SAE (see the module docstring)."""

    n_features: int = 128
    kind: str = "topk"
    k: int = 32  # active features per input (topk)
    l1: float = 3e-3  # sparsity penalty (l1), relative to the data's variance
    steps: int = 6000
    batch_size: int = 256
    lr: float = 3e-3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("l1", "topk"):
            raise ValueError(f"kind: expected 'l1' or 'topk', got {self.kind!r}")
        for name in ("n_features", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.kind == "topk" and not 1 <= self.k <= self.n_features:
            raise ValueError(f"k: must be in 1..n_features={self.n_features}, got {self.k}")
        if self.l1 < 0 or self.lr <= 0:
            raise ValueError("l1 must be >= 0 and lr > 0")

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class SAE(nn.Module):
    """A sparse autoencoder with ``W_enc`` [d, n_features], ``b_enc``, ``W_dec`` [n_features, d], ``b_dec``, on
    ``device``."""

    def __init__(self, d: int, cfg: SAEConfig, device: torch.device | str = "cpu"):
        super().__init__()
        self.cfg = cfg
        gen = torch.Generator().manual_seed(cfg.seed)  # drawn on the CPU, then moved: the same start on every device
        dec = torch.randn(cfg.n_features, d, generator=gen, device="cpu")
        dec = (dec / dec.norm(dim=1, keepdim=True)).to(device)
        self.W_dec = nn.Parameter(dec)
        self.W_enc = nn.Parameter(dec.T.clone())
        self.b_enc = nn.Parameter(torch.zeros(cfg.n_features, device=device))
        self.b_dec = nn.Parameter(torch.zeros(d, device=device))

    def encode(self, x: Tensor) -> Tensor:
        pre = (x - self.b_dec) @ self.W_enc + self.b_enc
        acts = F.relu(pre)
        if self.cfg.kind == "topk" and self.cfg.k < acts.shape[-1]:
            top = acts.topk(self.cfg.k, dim=-1)
            acts = torch.zeros_like(acts).scatter(-1, top.indices, top.values)
        return acts

    def decode(self, f: Tensor) -> Tensor:
        return f @ self.W_dec + self.b_dec

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))


def train_sae(x: Tensor, cfg: SAEConfig = SAEConfig()) -> tuple[SAE, list[float]]:
    """Train an SAE on rows of ``x`` [n, d]; returns (the SAE in eval mode, the loss every 100 steps)."""
    x = x.detach().to(torch.float32)
    n, d = x.shape
    sae = SAE(d, cfg, x.device)
    mean = x.mean(dim=0)
    scale = float(((x - mean) ** 2).sum(dim=1).mean()) or 1.0
    with torch.no_grad():
        sae.b_dec.copy_(mean)
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed + 1)  # batches drawn on the CPU: the same ones on every device
    losses = []
    bs = min(cfg.batch_size, n)
    for step in range(cfg.steps):
        xb = x[torch.randint(0, n, (bs,), generator=gen, device="cpu").to(x.device)]
        f = sae.encode(xb)
        rec = ((sae.decode(f) - xb) ** 2).sum(dim=1).mean() / scale
        loss = rec + cfg.l1 * f.sum(dim=1).mean() / math.sqrt(scale) if cfg.kind == "l1" else rec
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sae.normalize_decoder()
        if step % 100 == 0 or step == cfg.steps - 1:
            losses.append(float(loss.detach()))
    return sae.eval(), losses


# ----------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class SAEFeatures:
    """Per-feature frequency analysis over the p*p grid (input side) and of the decoder directions (output side)."""

    frequency: list[int]  # best frequency of each feature by its 3x3-block fraction (0: dead or constant)
    fve: list[float]  # the 3x3-block fraction at that frequency (the strict neuron rule)
    fve_harmonic: list[float]  # fraction in the frequency's harmonic family {0, k, 2k}^2 (5x5 block)
    aligned: list[bool]  # alive and fve_harmonic >= threshold
    per_key_frequency: dict[int, int]  # key frequency -> number of aligned features
    n_aligned_key: int  # aligned with one key frequency
    n_aligned_other: int  # aligned with one non-key frequency
    n_aligned_strict: int  # alive with 3x3-block fraction >= threshold (as for neurons)
    n_live: int
    threshold: float
    output_frequency: list[int] = field(default_factory=list)  # best frequency of the decoder's logit effect
    output_fraction: list[float] = field(default_factory=list)  # its share of the effect's non-constant energy
    n_output_aligned_key: int = 0  # live features whose logit effect is >= threshold on one key frequency
    n_both_same_key: int = 0  # aligned on both sides with the same key frequency

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "per_key_frequency": {str(k): v for k, v in self.per_key_frequency.items()}}


def _family(k: int, p: int, harmonics: int, device: torch.device) -> Tensor:
    """Basis rows of {0} and the frequencies m*k mod p (folded into 1..(p-1)/2) for m = 1..harmonics, on
    ``device``."""
    freqs = set()
    for m in range(1, harmonics + 1):
        j = (m * k) % p
        j = min(j, p - j)
        if j:
            freqs.add(j)
    rows = [0]
    for j in sorted(freqs):
        rows += [2 * j - 1, 2 * j]
    return torch.tensor(rows, device=device)


def feature_frequencies(feats: Tensor, p: int, key_freqs: Iterable[int], threshold: float | None = None, *,
                        harmonics: int = 2, logit_effect: Tensor | None = None) -> SAEFeatures:
    """Frequency analysis of feature activations ``feats`` [p*p, n_features] in grid order (row a*p + b).

    Input side: the 2D DFT energy of each feature over (a, b) (mean removed); a feature aligns with frequency k
    when >= ``threshold`` (default 85%, the neuron rule's) of it lies in the harmonic family {0, k, ..,
    harmonics*k}^2 (a sparse feature is a rectified, hence harmonic-rich, function of one frequency; the 3x3
    block of the neuron rule is also reported). Output side (optional ``logit_effect`` [n_features, p], e.g.
    W_dec @ W_out @ W_U): the share of each effect's non-constant energy at its best frequency.
    """
    thr = NEURON_FVE_THRESHOLD if threshold is None else threshold
    f64 = feats.to(torch.float64)
    energy = fourier_transform_2d(f64.reshape(p, p, -1)) ** 2
    energy[0, 0] = 0.0
    total = energy.sum(dim=(0, 1)).clamp_min(1e-300)
    n_k = (p - 1) // 2
    strict, harm = [], []
    for k in range(1, n_k + 1):
        i3 = torch.tensor([0, 2 * k - 1, 2 * k], device=energy.device)
        strict.append(energy[i3][:, i3].sum(dim=(0, 1)) / total)
        fam = _family(k, p, harmonics, energy.device)
        harm.append(energy[fam][:, fam].sum(dim=(0, 1)) / total)
    strict_t, harm_t = torch.stack(strict), torch.stack(harm)  # [K, n]
    fve, arg = strict_t.max(dim=0)  # the fundamental: most energy in one frequency's 3x3 block
    best = harm_t.gather(0, arg[None])[0]  # then its harmonic family's share
    alive = f64.var(dim=0) > 0
    freq = torch.where(alive, arg + 1, torch.zeros_like(arg))
    aligned = alive & (best >= thr)
    keys = sorted({int(k) for k in key_freqs})
    per = {k: int((aligned & (freq == k)).sum()) for k in keys}
    n_key = sum(per.values())
    n_strict = int((alive & (strict_t.max(dim=0).values >= thr)).sum())
    out_freq, out_frac, n_out, n_both = [], [], 0, 0
    if logit_effect is not None:
        c = fourier_transform(logit_effect.to(torch.float64), dim=1) ** 2
        fe = c[:, 1::2] + c[:, 2::2]
        share, oarg = (fe / fe.sum(dim=1, keepdim=True).clamp_min(1e-300)).max(dim=1)
        ofreq = oarg + 1
        key_t = torch.tensor(keys, dtype=ofreq.dtype, device=ofreq.device)
        out_ok = alive & (share >= thr) & torch.isin(ofreq, key_t)
        n_out = int(out_ok.sum())
        n_both = int((out_ok & aligned & (ofreq == freq)).sum())
        out_freq, out_frac = ofreq.tolist(), share.tolist()
    return SAEFeatures(freq.tolist(), fve.tolist(), best.tolist(), aligned.tolist(), per, n_key,
                       int(aligned.sum()) - n_key, n_strict, int(alive.sum()), thr, out_freq, out_frac, n_out, n_both)


@dataclass(frozen=True)
class SAEReport:
    """How well an SAE reconstructs the activations and what its features are."""

    step: int | None
    hook: str
    config: dict[str, Any]
    n_inputs: int
    d: int
    mse: float  # mean squared error per entry
    fvu: float  # fraction of variance unexplained: sum ||x - x_hat||^2 / sum ||x - mean||^2
    l0: float  # mean number of active features per input
    dead: int  # features never active on any input
    features: SAEFeatures
    accuracy: dict[str, float]  # original / spliced / zero-ablated / mean-ablated test accuracy
    loss: dict[str, float]  # the same for the test loss
    train_seconds: float
    loss_curve: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        def clean(v: Any) -> Any:
            if isinstance(v, float):
                return v if math.isfinite(v) else None
            if isinstance(v, dict):
                return {str(k): clean(x) for k, x in v.items()}
            if isinstance(v, list):
                return [clean(x) for x in v]
            return v

        d = {k: v for k, v in self.__dict__.items() if k != "features"}
        d["features"] = self.features.to_dict()
        return clean(d)

    def summary(self) -> str:
        f = self.features
        per = ", ".join(f"k={k}: {n}" for k, n in f.per_key_frequency.items()) or "none"
        return "\n".join([
            f"SAE ({self.config['kind']}, {self.config['n_features']} features) on {self.hook} at step {self.step}: "
            f"{self.n_inputs} inputs x {self.d} dims, trained in {self.train_seconds:.1f} s",
            f"  reconstruction: MSE {self.mse:.4g}, fraction of variance unexplained {self.fvu:.4f}",
            f"  sparsity: L0 {self.l0:.2f} active features per input; dead features {self.dead} of "
            f"{self.config['n_features']}",
            f"  live features aligned with one key frequency (>= {f.threshold:.0%} of variance in its family "
            f"{{0,k,2k}}^2): {f.n_aligned_key} of {f.n_live} ({per}); non-key: {f.n_aligned_other}; strict 3x3 block: "
            f"{f.n_aligned_strict}",
            f"  decoder writes one key frequency to the logits (>= {f.threshold:.0%}): {f.n_output_aligned_key}; "
            f"aligned on both sides with the same key frequency: {f.n_both_same_key}",
            "  test accuracy: " + ", ".join(f"{k} {v:.4f}" for k, v in self.accuracy.items()),
            "  test loss:     " + ", ".join(f"{k} {v:.3g}" for k, v in self.loss.items()),
        ])


def splice_accuracy(model: Model, tokens: Tensor, labels: Tensor, hook: str, replace: Tensor,
                    position: int | None = -1) -> tuple[float, float]:
    """(accuracy, cross-entropy) of ``model`` on ``tokens`` with activation ``hook`` at ``position`` replaced by
    ``replace`` [n, d] (one row per input)."""

    def fn(x: Tensor, name: str) -> Tensor:
        x = x.clone()
        if x.dim() == 3 and position is not None:
            x[:, position] = replace.to(x.dtype)
        else:
            x[:] = replace.to(x.dtype).reshape(x.shape)
        return x

    with torch.no_grad():
        logits = model.run_with_hooks(tokens, fwd_hooks=[(hook, fn)])
    logp = F.log_softmax(logits.to(torch.float64), dim=-1)
    return float((logits.argmax(-1) == labels).to(torch.float64).mean()), float(-logp.gather(1, labels[:, None]).mean())


def evaluate_sae(
    sae: SAE, model: Model, task: Any, key_freqs: Iterable[int], *, hook: str | None = None,
    position: int | None = -1, step: int | None = None, train_seconds: float = 0.0, loss_curve: Sequence[float] = (),
) -> SAEReport:
    """Reconstruction, sparsity, dead features, frequency alignment and spliced-in test accuracy of ``sae``."""
    hook = hook or default_hook(model)
    x = activations_at(model, task.tokens, hook, position).to(torch.float32)  # task order
    with torch.no_grad():
        f = sae.encode(x)
        xh = sae.decode(f)
    err = ((x - xh) ** 2).sum()
    var = ((x - x.mean(dim=0)) ** 2).sum()
    mse = float(err) / x.numel()
    fvu = float(err / var) if float(var) > 0 else float("nan")
    l0 = float((f > 0).to(torch.float64).sum(dim=1).mean())
    dead = int(((f > 0).sum(dim=0) == 0).sum())
    feats = None
    if getattr(task, "is_full_grid", False):
        effect = None
        if hook == default_hook(model):  # the last MLP's neurons: a feature writes W_dec @ W_out @ W_U to the logits
            effect = sae.W_dec.detach().to(torch.float64) @ neuron_logit_map(model, task.p)
        feats = feature_frequencies(f[grid_order(task)], task.p, key_freqs, logit_effect=effect)
    te = task.test_idx
    tokens, labels = task.tokens[te], task.labels[te]
    acc, loss = {}, {}
    with torch.no_grad():
        logits = model(tokens)
    logp = F.log_softmax(logits.to(torch.float64), dim=-1)
    acc["original"] = float((logits.argmax(-1) == labels).to(torch.float64).mean())
    loss["original"] = float(-logp.gather(1, labels[:, None]).mean())
    acc["spliced"], loss["spliced"] = splice_accuracy(model, tokens, labels, hook, xh[te], position)
    acc["mean-ablated"], loss["mean-ablated"] = splice_accuracy(
        model, tokens, labels, hook, x.mean(dim=0, keepdim=True).expand(len(te), -1), position)
    acc["zero-ablated"], loss["zero-ablated"] = splice_accuracy(model, tokens, labels, hook, torch.zeros_like(xh[te]),
                                                                position)
    if feats is None:
        feats = SAEFeatures([], [], [], [], {}, 0, 0, 0, 0, float("nan"))
    return SAEReport(step, hook, sae.cfg.to_dict(), int(x.shape[0]), int(x.shape[1]), mse, fvu, l0, dead, feats, acc,
                     loss, train_seconds, list(loss_curve))


def sae_on_checkpoint(
    model: Model, task: Any, key_freqs: Iterable[int], cfg: SAEConfig = SAEConfig(), *, hook: str | None = None,
    position: int | None = -1, step: int | None = None,
) -> tuple[SAE, SAEReport]:
    """Train an SAE on the activation ``hook`` (default: the last MLP's post-activations at the last position)
    over every input of ``task`` and evaluate it."""
    x = activations_at(model, task.tokens, hook, position)
    t0 = time.perf_counter()
    sae, curve = train_sae(x, cfg)
    secs = time.perf_counter() - t0
    return sae, evaluate_sae(sae, model, task, key_freqs, hook=hook, position=position, step=step,
                             train_seconds=secs, loss_curve=curve)


# ----------------------------------------------------------------------------- across checkpoints


@dataclass(frozen=True)
class SAEComparison:
    """Two SAEs on the same activation space (e.g. two checkpoints): decoder-direction overlap and features."""

    step_a: int | None
    step_b: int | None
    mean_max_cosine: float  # mean over A's live features of the best |cos| with any of B's live decoder rows
    matched: int  # live features of A with a B partner at |cos| >= threshold
    threshold: float
    same_frequency: int  # matched pairs where both align with the same frequency
    n_live_a: int
    n_live_b: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def compare_saes(sae_a: SAE, sae_b: SAE, report_a: SAEReport | None = None, report_b: SAEReport | None = None,
                 *, threshold: float = 0.9) -> SAEComparison:
    """Match decoder directions of two SAEs trained on the same activation (same neuron basis)."""
    dev_a, dev_b = sae_a.W_dec.device, sae_b.W_dec.device
    live_a = torch.ones(sae_a.W_dec.shape[0], dtype=torch.bool, device=dev_a)
    live_b = torch.ones(sae_b.W_dec.shape[0], dtype=torch.bool, device=dev_b)
    if report_a is not None and report_a.features.frequency:
        live_a = torch.tensor([f > 0 for f in report_a.features.frequency], device=dev_a)
    if report_b is not None and report_b.features.frequency:
        live_b = torch.tensor([f > 0 for f in report_b.features.frequency], device=dev_b)
    da = F.normalize(sae_a.W_dec.detach()[live_a], dim=1)
    db = F.normalize(sae_b.W_dec.detach()[live_b], dim=1)
    if da.shape[0] == 0 or db.shape[0] == 0:
        return SAEComparison(None, None, float("nan"), 0, threshold, 0, int(da.shape[0]), int(db.shape[0]))
    cos = (da @ db.T).abs()
    best, idx = cos.max(dim=1)
    matched = best >= threshold
    same = 0
    if report_a is not None and report_b is not None:
        fa = torch.tensor(report_a.features.frequency, device=dev_a)[live_a]
        aa = torch.tensor(report_a.features.aligned, device=dev_a)[live_a]
        fb = torch.tensor(report_b.features.frequency, device=dev_b)[live_b][idx]
        ab = torch.tensor(report_b.features.aligned, device=dev_b)[live_b][idx]
        same = int((matched & aa & ab & (fa == fb)).sum())
    return SAEComparison(report_a.step if report_a else None, report_b.step if report_b else None, float(best.mean()),
                         int(matched.sum()), threshold, same, int(da.shape[0]), int(db.shape[0]))
