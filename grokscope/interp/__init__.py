"""Instruments of mechanistic interpretability, checkable against the known Fourier circuit.

- :mod:`~grokscope.interp.patching`: activation patching (any named activation, by position / head / unit);
  :mod:`~grokscope.interp.patch_sweeps`: sweeps over heads, neurons and positions, frequency-cluster patching.
- :mod:`~grokscope.interp.attribution`: attribution patching (one forward + backward pass) and its agreement
  with activation patching.
- :mod:`~grokscope.interp.probes`: closed-form ridge probes to cos/sin(w_k a), (w_k b), (w_k (a+b)) and the answer.
- :mod:`~grokscope.interp.sae`: sparse autoencoders (top-k, L1) on MLP activations and their features' frequencies.

Pure functions of models and tensors returning dataclasses with ``to_dict()``; only ``cli.py`` touches files.
"""

from grokscope.interp.attribution import (
    Attribution,
    AttributionComparison,
    attribution_patching,
    attribution_sweep,
    compare_with_activation_patching,
)
from grokscope.interp.patch_sweeps import (
    ClusterPatching,
    PatchSweep,
    cluster_patching,
    sweep,
    sweep_heads,
    sweep_neurons,
    sweep_positions,
)
from grokscope.interp.patching import (
    PatchResult,
    PatchSetup,
    Site,
    logit_diff,
    make_corruption,
    patch_activation,
    patch_sites,
)
from grokscope.interp.probes import ProbeReport, ProbeSeries, fit_ridge, probe_checkpoints, probe_model
from grokscope.interp.sae import SAE, SAEConfig, SAEReport, compare_saes, sae_on_checkpoint, train_sae

__all__ = [
    "SAE", "Attribution", "AttributionComparison", "ClusterPatching", "PatchResult", "PatchSetup", "PatchSweep",
    "ProbeReport", "ProbeSeries", "SAEConfig", "SAEReport", "Site", "attribution_patching", "attribution_sweep",
    "cluster_patching", "compare_saes", "compare_with_activation_patching", "fit_ridge", "logit_diff",
    "make_corruption", "patch_activation", "patch_sites", "probe_checkpoints", "probe_model", "sae_on_checkpoint",
    "sweep", "sweep_heads", "sweep_neurons", "sweep_positions", "train_sae",
]
