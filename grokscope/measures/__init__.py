"""Progress measures: the Fourier toolkit, the model read over the input grid, key frequencies, restricted/excluded
loss, Gini, FFS/FCR, the cheap extra measures (activation sparsity, weight entropy, logit efficiency), and phase
detection. Pure functions of tensors, models and tasks; no file I/O. See
``docs/measures.md`` for every formula.

This package is the measures' public API: code outside ``grokscope.measures`` imports from here, not from its
modules, so the modules can be rearranged freely. ``grokscope.measures.names`` holds the metric names.
"""

from grokscope.measures import names
from grokscope.measures.bases import GroupBasis, detect_basis, formula_table, task_basis
from grokscope.measures.extra import (
    ACT_SPARSITY_TAU,
    abs_weight_entropy,
    activation_sparsity,
    extra_measures,
    last_mlp_post,
    logit_efficiency,
    normalised_weight_entropy,
)
from grokscope.measures.fourier import (
    abc_wave_components,
    basis_index,
    component_norms,
    discrete_log,
    discrete_log_basis,
    discrete_log_basis_names,
    fourier_basis,
    fourier_basis_names,
    fourier_transform,
    fourier_transform_2d,
    frequency_norms,
    frequency_of_index,
    inverse_fourier_transform,
    is_prime,
    n_frequencies,
    primitive_root,
    real_fourier_basis,
    wave,
)
from grokscope.measures.grid import (
    MeasureError,
    block_fractions,
    check_task,
    cross_entropy,
    grid_order,
    grid_rows,
    logit_table,
    mlp_activations,
    neuron_energy,
    neuron_frequency_fractions,
    neuron_logit_map,
    number_embedding,
    post_hook_name,
)
from grokscope.measures.keys import (
    KEY_FREQ_RULES,
    KEY_GAP_FLOOR,
    KEY_GAP_RATIO,
    NEURON_FVE_THRESHOLD,
    ONLINE_ENERGY_FACTOR,
    W_E_NORM_FRACTION,
    checked_key_set,
    key_frequencies,
    key_frequencies_from_logits,
    key_frequencies_from_norms,
    key_frequencies_online,
)
from grokscope.measures.phases import (
    FIT_ACC,
    GROK_ACC,
    PHASE_FRACTION,
    SMOOTH_WINDOW,
    Phases,
    detect_phases,
    grok_epoch,
)
from grokscope.measures.progress import (
    FFS_ETA,
    ModelSource,
    ffs_fcr,
    ffs_fcr_from_norms,
    fixed_key_measures,
    gini,
    label_wave_fit,
    logit_measures,
    progress_measures,
    restricted_excluded,
    sum_sq_weights,
)

__all__ = [
    "names", "GroupBasis", "detect_basis", "formula_table", "task_basis",
    "ACT_SPARSITY_TAU", "abs_weight_entropy", "activation_sparsity", "extra_measures", "last_mlp_post",
    "logit_efficiency", "normalised_weight_entropy",
    "FFS_ETA", "FIT_ACC", "GROK_ACC", "KEY_FREQ_RULES", "KEY_GAP_FLOOR", "KEY_GAP_RATIO", "MeasureError",
    "ModelSource", "NEURON_FVE_THRESHOLD", "ONLINE_ENERGY_FACTOR", "PHASE_FRACTION", "Phases", "SMOOTH_WINDOW",
    "W_E_NORM_FRACTION", "abc_wave_components", "basis_index", "block_fractions", "check_task", "checked_key_set",
    "component_norms", "cross_entropy", "detect_phases", "discrete_log", "discrete_log_basis",
    "discrete_log_basis_names", "ffs_fcr", "ffs_fcr_from_norms", "fixed_key_measures", "fourier_basis",
    "fourier_basis_names", "fourier_transform", "fourier_transform_2d", "frequency_norms", "frequency_of_index", "gini",
    "grid_order", "grid_rows", "grok_epoch", "inverse_fourier_transform", "is_prime", "key_frequencies",
    "key_frequencies_from_logits", "key_frequencies_from_norms", "key_frequencies_online", "label_wave_fit",
    "logit_measures", "logit_table", "mlp_activations", "n_frequencies", "neuron_energy", "neuron_frequency_fractions",
    "neuron_logit_map", "number_embedding", "post_hook_name", "primitive_root", "progress_measures",
    "real_fourier_basis", "restricted_excluded", "sum_sq_weights", "wave",
]
