"""Plain-text tables for an :class:`~grokscope.analysis.reverse.Analysis` (paste-able, fixed width)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from grokscope.analysis.basis import basis_summary
from grokscope.analysis.reverse import Analysis
from grokscope.measures import FIT_ACC, GROK_ACC, names

__all__ = ["format_table", "render_analysis", "render_phases", "render_summary"]


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if not math.isfinite(x):
            return str(x)
        if x == 0 or 1e-3 <= abs(x) < 1e5:
            return f"{x:.4f}"
        return f"{x:.3e}"
    if isinstance(x, (list, tuple)):
        return "{" + ", ".join(_fmt(v) for v in x) + "}"
    return str(x)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> str:
    """A left-aligned text table with a header rule; cells formatted compactly."""
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    out = [title] if title else []
    out += [line(headers), line(["-" * w for w in widths])] + [line(r) for r in cells]
    return "\n".join(out)


def _basis_of(a: Analysis) -> tuple[dict[str, Any], str]:
    """(the basis dict of a :class:`~grokscope.analysis.basis.BasisAnalysis`, or {}; the inputs its numbers cover)."""
    basis = getattr(a, "basis", None) or {}
    grouped = bool(basis) and basis.get("name") is not None and not basis.get("softmax", "").startswith("over all p")
    return basis, (f"all {basis['n']}^2 group inputs" if grouped else "all p^2")


def render_analysis(a: Analysis, *, top: int = 10) -> str:
    """Every table of one analysis, as text (in a group basis: its name first, and the inputs it covers)."""
    parts = []
    head = f"Analysis of {a.arch} on {a.formula} mod {a.p}" + (f" at step {a.step}" if a.step is not None else "")
    parts.append(head)
    basis, scope = _basis_of(a)
    if basis:
        parts.append(basis_summary(basis))
        own = basis.get("model")
        if own:
            parts.append(f"the model's own (all p classes): loss {_fmt(own['loss'])}, test loss "
                         f"{_fmt(own['test_loss'])}; outside the group ({int(own['n_outside'])} inputs): loss "
                         f"{_fmt(own['outside_loss'])}, acc {_fmt(own['outside_acc'])}")
    parts.append(
        f"key frequencies ({a.key_freq_rule}): {_fmt(a.key_frequencies)}   "
        + "   ".join(f"{r}: {_fmt(v)}" for r, v in a.key_frequencies_by_rule.items())
    )
    losses = a.losses
    parts.append(
        format_table(
            ["measure", "value"],
            [
                [f"loss ({scope})", losses["loss"]],
                ["train loss", losses[names.TRAIN_LOSS]],
                ["test loss", losses[names.TEST_LOSS]],
                [f"restricted loss ({scope})", losses[names.RESTRICTED_LOSS]],
                [f"restricted acc ({scope})", losses[names.RESTRICTED_ACC]],
                ["excluded loss (train)", losses[names.EXCLUDED_LOSS]],
                ["excluded acc (train)", losses[names.EXCLUDED_ACC]],
                ["Gini W_E / W_L", f"{a.gini_W_E:.4f} / {a.gini_W_L:.4f}"],
                ["sum of squared weights", a.sum_sq_weights],
                ["FFS / FCR (reconstructed)", f"{a.ffs:.4f} / {a.fcr:.4f}"],
                ["W_L residual after rank-2K", a.W_L_residual_fraction],
            ],
            title="\nLosses and measures",
        )
    )
    order = sorted(range(len(a.W_E_frequency_norms)), key=lambda i: -a.W_E_frequency_norms[i])[:top]
    parts.append(
        format_table(
            ["k", "|W_E_k|", "|W_L_k|", "key"],
            [[i + 1, a.W_E_frequency_norms[i], a.W_L_frequency_norms[i], "*" if i + 1 in a.key_frequencies else ""]
             for i in order],
            title=f"\nFourier norms (top {len(order)} frequencies of W_E)",
        )
    )
    n = a.neurons
    rows = [[k, c] for k, c in n.clusters.items()] + [["unclustered", n.n_unclustered]]
    parts.append(
        format_table(
            ["frequency", "neurons"],
            rows,
            title=f"\nNeuron clusters: {n.n_explained}/{n.n_neurons} neurons with >= {n.threshold:.0%} variance in one "
            f"frequency's 3x3 block ({n.n_explained_quadratic} counting its squares too)",
        )
    )
    lf = a.logit_fit
    parts.append(
        format_table(
            ["k", "alpha_k", "sin coef"],
            [[k, lf.alpha[k], lf.sin_coefficient[k]] for k in lf.frequencies],
            title=f"\nLogit fit sum_k alpha_k cos(w_k({'a+b-c' if scope == 'all p^2' else 'i+j-m'})): "
            f"FVE {lf.fve:.4f}, fit loss {_fmt(lf.fit_loss)}",
        )
    )
    parts.append(
        format_table(
            ["ablation", "loss", "acc", "train loss", "test loss"],
            [[r.name, r.loss, r.acc, r.train_loss, r.test_loss] for r in a.ablations],
            title=f"\nAblations (loss/acc over {scope}{' inputs' if scope == 'all p^2' else ''})",
        )
    )
    if a.attention:
        parts.append(
            format_table(
                ["layer", "head", "frequency", "FVE", "mean attn"],
                [[h.layer, h.head, h.frequency, h.fve, h.mean] for h in a.attention],
                title="\nAttention to the first token",
            )
        )
    if a.star:
        parts.append(
            format_table(
                ["neuron", "k", "angle in", "angle out", "|in|", "|out|"],
                [[s.neuron, s.frequency, s.angle_in, s.angle_out, math.hypot(s.cos_in, s.sin_in),
                  math.hypot(s.cos_out, s.sin_out)] for s in sorted(a.star, key=lambda s: (s.frequency, s.angle_in))],
                title="\nMLP neurons (PAIR star plots)",
            )
        )
    parts.append(render_table5([a.table5.to_dict()]))
    return "\n".join(parts)


def render_table5(rows: Sequence[dict[str, Any]]) -> str:
    """Rows in the format of the paper's Table 5 (dicts as from ``Table5Row.to_dict()``)."""
    return format_table(
        ["test loss", "Gini W_E", "Gini W_L", "key freqs", "logit FVE", "MLP FVE"],
        [
            [
                r["test_loss"],
                r["gini_W_E"],
                r["gini_W_L"],
                r["key_frequencies"],
                r["logit_fve"],
                f"{_fmt(r['mlp_fve_mean'])} +- {_fmt(r['mlp_fve_std'])}",
            ]
            for r in rows
        ],
        title="\nTable 5 row",
    )


def render_phases(phases: dict[str, Any]) -> str:
    """Phase boundaries (a ``Phases.to_dict()``) as text, next to the paper's mainline values."""
    return format_table(
        ["boundary", "step", "mainline (paper)"],
        [
            [f"train acc >= {FIT_ACC:.0%}", phases.get("train_fit_epoch"), "~1.4k"],
            ["memorisation end", phases.get("memorisation_end"), "1.4k"],
            ["circuit formation end", phases.get("circuit_formation_end"), "9.4k"],
            [f"grok (test acc >= {GROK_ACC:.0%})", phases.get("grok_epoch"), "~10k+"],
            ["cleanup end", phases.get("cleanup_end"), "14k"],
        ],
        title="\nPhases",
    )


def render_summary(a: Analysis, phases: dict[str, Any] | None = None) -> str:
    """A short end-of-run summary: grok epoch, phases, the basis (when named), key frequencies, restricted vs test
    loss, Table 5 row."""
    lines = []
    if phases is not None:
        lines.append(render_phases(phases))
    basis, _ = _basis_of(a)
    if basis:
        lines.append(basis_summary(basis))
    lines.append(
        f"\nkey frequencies ({a.key_freq_rule}): {_fmt(a.key_frequencies)}; restricted loss "
        f"{_fmt(a.losses[names.RESTRICTED_LOSS])} vs test loss {_fmt(a.losses[names.TEST_LOSS])}; "
        f"{a.neurons.n_explained}/{a.neurons.n_neurons} neurons explained"
    )
    lines.append(render_table5([a.table5.to_dict()]))
    return "\n".join(lines)


def render_logit_analysis(data: dict[str, Any]) -> str:
    """The logit-level analysis of a model known by its logits (:func:`grokscope.analysis.logits.analyze_logits`'s
    dict) as text: key frequencies, the losses, the ablations, the logit fit, and what was skipped and why."""
    lines = [f"Logit-level analysis of {data.get('task')} {data.get('formula') or ''} mod {data.get('p')}"
             + (f" at step {data['step']}" if data.get("step") is not None else "")]
    basis = data.get("basis") or {}
    if basis.get("name"):
        lines.append(basis_summary(basis))
    losses = data["losses"]
    keys = _fmt(data["key_frequencies"]) if data["key_frequencies"] else "none (no frequency stands out)"
    lines.append(f"key frequencies ({data['key_freq_rule']}): {keys}; logit fit FVE "
                 f"{_fmt(data['logit_fit']['fve'])}")
    lines.append(format_table(["measure", "value"], [
        ["train loss", losses[names.TRAIN_LOSS]], ["test loss", losses[names.TEST_LOSS]],
        ["restricted loss", losses[names.RESTRICTED_LOSS]], ["excluded loss (train)", losses[names.EXCLUDED_LOSS]],
    ]))
    lines.append(format_table(["ablation", "loss", "acc", "train loss", "test loss"],
                              [[r["name"], r["loss"], r["acc"], r["train_loss"], r["test_loss"]]
                               for r in data["ablations"]], title="\nLogit ablations"))
    lines.extend(f"skipped: {what}: {why}" for what, why in data.get("skipped", {}).items())
    return "\n".join(lines)
