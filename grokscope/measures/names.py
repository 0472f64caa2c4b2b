"""The names of the metrics a run stores, declared once, and the fixed-key rule that relates them.

Every metric is a row ``(step, name, value)`` of the run's ``metrics`` table. The training loop writes the
losses and accuracies; the progress measures write the rest. The key-frequency-dependent measures (restricted
and excluded loss) are written twice over a run's life:

- during training, with the key set found online at each step (``restricted_loss``);
- by ``grokscope analyze --all-steps`` (or ``run``), with ONE key set from the final checkpoint, under the same
  name plus :data:`FIXED_SUFFIX` (``restricted_loss_fixed``).

The fixed-key rule: wherever both exist, readers (figures, phases, tables) take the fixed column, since one key
set across steps is what the paper plots. :func:`read_as` says which column to read for a name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Written by the training loop at every evaluation.
TRAIN_LOSS = "train_loss"
TEST_LOSS = "test_loss"
TRAIN_ACC = "train_acc"
TEST_ACC = "test_acc"
LR = "lr"

# Written by the progress measures (measures/progress.py), every train.measure_every epochs.
RESTRICTED_LOSS = "restricted_loss"
RESTRICTED_ACC = "restricted_acc"
EXCLUDED_LOSS = "excluded_loss"
EXCLUDED_ACC = "excluded_acc"
GINI_W_E = "gini_W_E"
GINI_W_L = "gini_W_L"
SUM_SQ_WEIGHTS = "sum_sq_weights"
FFS = "ffs"
FCR = "fcr"
N_KEY_FREQS = "n_key_freqs"
KEY_FREQS_FIXED = "key_freqs_fixed"  # 1.0 when the measures were given a key set, else 0.0 (a flag, not a measure)

# Cheap extra progress measures (measures/extra.py), written with the ones above.
ACT_SPARSITY = "act_sparsity"  # fraction of the last MLP's activations at "=" that are <= 0 (Golechha 2024)
ABS_WEIGHT_ENTROPY = "abs_weight_entropy"  # -sum |w| ln |w| over every parameter (Golechha 2024)
WEIGHT_ENTROPY_NORMALISED = "weight_entropy_normalised"  # Shannon entropy of |w| / sum |w| (scale-free)
LOGIT_EFFICIENCY = "logit_efficiency"  # ||logits||_F over every input / ||theta||_2 (cf. Varma et al. 2023)

# Lazy or rich (measures/dynamics.py; Kumar et al. 2024), written with the progress measures.
RELATIVE_WEIGHT_CHANGE = "relative_weight_change"  # ||theta_t - theta_0|| / ||theta_0||
NTK_ALIGNMENT = "ntk_alignment"  # CKA of the class-summed empirical NTK on NTK_EXAMPLES train rows with [y_i == y_j]
NTK_EXAMPLES = 32  # the first this many training rows (a setting, not a metric name)

#: The suffix of a measure computed with one fixed key set (see the module docstring).
FIXED_SUFFIX = "_fixed"
#: Measures that depend on the key frequencies, hence have a fixed-key twin.
KEY_DEPENDENT_PREFIXES = ("restricted_", "excluded_")


def excluded_loss_k(k: int) -> str:
    """The excluded loss with only key frequency ``k`` removed."""
    return f"excluded_loss_k{int(k)}"


def is_key_dependent(name: str) -> bool:
    """True for a measure that has a fixed-key twin (``restricted_*``, ``excluded_*``), fixed or not."""
    return name.startswith(KEY_DEPENDENT_PREFIXES) and name != KEY_FREQS_FIXED


def fixed(name: str) -> str:
    """The fixed-key column of ``name``: ``restricted_loss`` -> ``restricted_loss_fixed``."""
    if not is_key_dependent(name) or name.endswith(FIXED_SUFFIX):
        raise ValueError(f"{name!r} has no fixed-key twin")
    return name + FIXED_SUFFIX


def plain(name: str) -> str:
    """The name without :data:`FIXED_SUFFIX` (``restricted_loss_fixed`` -> ``restricted_loss``); others unchanged."""
    return name[: -len(FIXED_SUFFIX)] if is_key_dependent(name) and name.endswith(FIXED_SUFFIX) else name


def read_as(name: str, available: Iterable[str]) -> str | None:
    """The column to read for ``name`` under the fixed-key rule: its fixed twin when that is among ``available``
    (columns that hold values), else ``name`` itself when available, else None."""
    have = set(available)
    if is_key_dependent(name) and not name.endswith(FIXED_SUFFIX) and name + FIXED_SUFFIX in have:
        return name + FIXED_SUFFIX
    return name if name in have else None


def fixed_key_view(available: Iterable[str]) -> dict[str, str]:
    """``{column: name to show}`` for the columns to keep under the fixed-key rule. When fixed-key columns are
    present, each is shown under its plain name in place of its online twin, and the online per-key columns
    (``excluded_loss_k{K}``, whose keys are the online set) are dropped; otherwise every column is kept as it is."""
    have = list(available)
    fixed_cols = {c for c in have if is_key_dependent(c) and c.endswith(FIXED_SUFFIX)}
    if not fixed_cols:
        return {c: c for c in have}
    twins = {plain(c) for c in fixed_cols}
    per_k = re.compile(r"^excluded_loss_k\d+$")
    return {c: plain(c) for c in have if c not in twins and not per_k.match(c)}
