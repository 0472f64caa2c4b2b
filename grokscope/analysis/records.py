"""The results of the Section 4 analysis (:mod:`grokscope.analysis.reverse`) as frozen dataclasses: ``to_dict()``
is JSON-safe (tensors to lists, non-finite floats to None); an :class:`Analysis` is analysis.json (schema in
``docs/analysis-json.md``). n below is the order of the cyclic group the analysis runs over (p for the additive
basis, p - 1 for the discrete-log one): frequencies 1..n//2.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, cast

from torch import Tensor

from grokscope.measures import names

__all__ = [
    "AblationRow", "Analysis", "CHOICES", "HeadFit", "LogitFit", "NeuronStats", "SCHEMA_VERSION", "StarNeuron",
    "Table5Row", "json_safe",
]

SCHEMA_VERSION = 1

#: How each ambiguity of the paper is resolved (docs/measures.md, "Ambiguities of the paper, and our choices");
#: written into every analysis.json.
CHOICES: dict[str, str] = {
    "A1": "restricted/excluded keep/remove 2 directions per key k, cos/sin(w_k c*) with c* the correct answer "
    "(= cos/sin(w_k(a+b)) for a+b), as in the original code; the ablation table also reports "
    "'keep key a+-b terms' (constant + the 2x2 cos/sin product block of each key k: the paper's 20 terms) and "
    "'keep key 3x3 blocks' (the 113^2-40 ablation)",
    "A2": "restricted loss/acc on all p^2 inputs; excluded loss/acc on train rows; projections fitted on all p^2 "
    "inputs (least squares on the answer's waves, an orthogonal projection for a+b); ablation rows report all "
    "p^2, train and test",
    "A3": "key frequencies by the W_L_dft largest-gap rule (ratio >= 2, floor 1e-4*max) unless given; analysis uses "
    "the analysed checkpoint; progress measures during training track them online by W_L_online (W_L_dft, else "
    "energy >= 2x the mean); the second pass fixes them from the final checkpoint by W_L_dft (columns suffixed "
    "_fixed)",
    "A4": "Gini over the (p-1)/2 per-frequency norms sqrt(cos^2+sin^2) (constant excluded), of F@W_E[:p] over "
    "d_model and of F@W_L^T over d_mlp; candidate frequencies 1..(p-1)/2 (all of them, unlike the code's 1..55)",
    "A5": "outputs restricted to the p number classes (a '=' output column is dropped); 'loss' means all p^2 "
    "inputs unless a name says train/test",
    "A6": "phase boundaries by the rule in grokscope.measures.phases (see docs/measures.md)",
}


# ----------------------------------------------------------------------------- result dataclasses


def json_safe(x: Any) -> Any:
    """JSON-safe copy: tensors to lists, non-finite floats to None, dict keys to str."""
    if isinstance(x, Tensor):
        return json_safe(x.tolist())
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


class _Record:
    """``to_dict()``: the dataclass as JSON-safe nested dicts and lists."""

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(cast(Any, self)))


@dataclass(frozen=True)
class NeuronStats(_Record):
    """Per-neuron fraction of variance explained by a degree-2 polynomial of one frequency (3x3 DFT block)."""

    frequency: list[int]  # [d_mlp] argmax frequency of each neuron (1..n//2), by the 3x3-block fraction
    fve: list[float]  # [d_mlp] its 3x3-block fraction (the paper's code; used for clusters and the 85% count)
    fve_quadratic: list[float]  # [d_mlp] best fraction with the squares of the same frequency added (all
    # degree-2 polynomials of cos/sin(w_k a), cos/sin(w_k b)); >= fve
    threshold: float
    clusters: dict[int, int]  # frequency -> number of neurons with fve >= threshold
    n_unclustered: int
    n_explained: int  # fve >= threshold
    n_explained_quadratic: int  # fve_quadratic >= threshold
    n_neurons: int


@dataclass(frozen=True)
class LogitFit(_Record):
    """OLS fit of the (row-centred) logits by sum_k alpha_k cos(w_k(c* - c)), c* the answer (a+b for addition)."""

    frequencies: list[int]
    alpha: dict[int, float]  # coefficient of the unnormalised cos wave
    sin_coefficient: dict[int, float]  # the same for sin(w_k(c* - c)) (~0 for a clean model; not in the fit)
    fve: float  # fraction of the row-centred logit variance explained
    fit_loss: float  # cross-entropy of the fitted table, all n^2 grid inputs
    fit_acc: float


@dataclass(frozen=True)
class AblationRow(_Record):
    name: str
    loss: float  # all n^2 grid inputs (p^2 in the additive basis)
    acc: float
    train_loss: float
    test_loss: float


@dataclass(frozen=True)
class HeadFit(_Record):
    """Attention from the last position to position 0 as a function of (a, b): best single frequency."""

    layer: int
    head: int
    frequency: int
    fve: float  # energy of the 4 components cos/sin(w_k a), cos/sin(w_k b) / mean-removed energy
    mean: float  # mean attention to position 0


@dataclass(frozen=True)
class StarNeuron(_Record):
    """PAIR star-plot data of one MLP neuron: its frequency and the cos/sin (phase) of its input and output."""

    neuron: int
    frequency: int
    cos_in: float
    sin_in: float
    angle_in: float
    cos_out: float
    sin_out: float
    angle_out: float


@dataclass(frozen=True)
class Table5Row(_Record):
    """One row in the format of the paper's Table 5 (appendix C.2.3)."""

    test_loss: float
    gini_W_E: float
    gini_W_L: float
    key_frequencies: list[int]
    logit_fve: float
    mlp_fve_mean: float
    mlp_fve_std: float


@dataclass(frozen=True)
class Analysis(_Record):
    """Everything :func:`analyze_checkpoint` finds about one checkpoint. ``to_dict()`` is analysis.json."""

    p: int
    arch: str
    formula: str
    step: int | None
    key_frequencies: list[int]
    key_freq_rule: str
    key_frequencies_by_rule: dict[str, list[int]]
    losses: dict[str, float]
    W_E_component_norms: list[float]  # [n] norms of the rows of F @ W_E viewed [n, d_model]
    W_E_frequency_norms: list[float]  # [n//2] ((p-1)/2 in the additive basis)
    W_L_frequency_norms: list[float]  # [n//2]
    W_L_residual_fraction: float
    gini_W_E: float
    gini_W_L: float
    sum_sq_weights: float
    ffs: float
    fcr: float
    neurons: NeuronStats
    logit_fit: LogitFit
    ablations: list[AblationRow]
    attention: list[HeadFit]
    star: list[StarNeuron]
    table5: Table5Row
    choices: dict[str, str] = field(default_factory=lambda: dict(CHOICES))
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["key_frequencies"] = [int(k) for k in self.key_frequencies]
        out[names.RESTRICTED_LOSS] = json_safe(float(self.losses[names.RESTRICTED_LOSS]))
        out[names.TEST_LOSS] = json_safe(float(self.losses[names.TEST_LOSS]))
        return out

