"""Frozen, keyword-only configuration dataclasses, one per concern.

Every config validates itself in ``__post_init__`` and raises :class:`ConfigError`
with a message that names the field (``optim.lr: must be > 0, got -1``). Configs
round-trip through JSON (:meth:`ExperimentConfig.to_json` / :meth:`ExperimentConfig.from_json`)
and are changed only by building new ones (:func:`apply_overrides`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from grokscope.config_fields import (
    ConfigError,
    apply_overrides,
    fail,
    field_paths,
    flat_dict,
    from_jsonable,
    jsonable,
    parse_override,
)
from grokscope.device import check_device_name

__all__ = [
    "ConfigError", "ExperimentConfig", "ModelConfig", "OptimConfig", "TaskConfig", "TrainConfig", "apply_overrides",
    "field_paths", "flat_dict", "parse_override",
]

MAX_SEED = 2**32 - 1  # seeds feed torch generators (with offsets) that hold signed 64-bit integers
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}"  # a registered task's or model's name


# --------------------------------------------------------------------------- components


@dataclass(frozen=True, kw_only=True)
class TaskConfig:
    """An algorithmic task.

    ``kind="modular"``: c = formula(a, b) mod p over all pairs (a, b), inputs ``[a, b, =]``.
    ``kind="multi"``: several modular formulas (``formula`` separated by ``;``) in one dataset, inputs
    ``[a, op, b, =]`` with one operation token per formula; metrics per operation.
    ``kind="s5"``: composition in the symmetric group S5 (120 permutations); ``formula`` is one of
    ``x*y``, ``x*y*x^-1``, ``x*y*x`` (``p`` is ignored).
    ``kind="sparse_parity"``: sparse parity (PAIR): ``n_bits`` random bits plus a constant 1 bit, label = parity of
    the first ``parity_k``; ``n_examples`` distinct sequences drawn with ``split_seed`` (``p``, ``formula`` ignored).
    ``n_train``: the number of training examples (overrides ``train_fraction``); ``None`` uses the fraction.
    ``pairs``: ``"all"`` p*p pairs, or ``"unordered"``: only a <= b (PAIR's symmetric-task datasets; modular only).
    ``kind="registered"``: the task registered under ``name`` (:func:`grokscope.tasks.register_task`, or a package's
    ``grokscope.tasks`` entry point): a user's table or callable; only the split fields apply (``p`` is ignored).

    Nanda et al. (2023) Appendix D.3 (:mod:`grokscope.tasks.sequence`; answers at several positions,
    arch='transformer'): ``kind="digit_addition"``: ``n_digits``-digit a + b, every digit of the sum predicted.
    ``kind="repeated_subsequence"``: ``seq_len`` tokens out of ``n_tokens``, a block of ``repeat_len`` repeated;
    predict the copy.
    ``kind="skip_trigram"``: ``seq_len - 1`` tokens below ``n_tokens / 2`` but one, then ``=``; predict the big one.
    For these ``n_examples`` distinct sequences are drawn with ``split_seed``; ``fresh_data``: train on a new batch
    (``train.batch_size``, default the train split's size) every epoch instead of the fixed training rows.
    """

    kind: str = "modular"
    formula: str = "a+b"
    p: int = 113
    train_fraction: float = 0.3
    split_seed: int = 0
    n_train: int | None = None
    n_bits: int = 30
    parity_k: int = 3
    n_examples: int = 1200
    pairs: str = "all"
    n_digits: int = 5
    seq_len: int = 16
    n_tokens: int = 20
    repeat_len: int = 4
    fresh_data: bool = False
    name: str = ""

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            fail("task.kind", f"unknown task kind {self.kind!r}; known: {', '.join(repr(k) for k in TASK_KINDS)}")
        if not (3 <= self.p <= 2000):
            fail("task.p", f"must be an integer in 3..2000, got {self.p}")
        if not (0.0 < self.train_fraction <= 1.0):
            fail("task.train_fraction", f"must be in (0, 1], got {self.train_fraction}")
        _check_seed("task.split_seed", self.split_seed)
        if self.n_train is not None and self.n_train < 1:
            fail("task.n_train", f"must be >= 1 or null (use train_fraction), got {self.n_train}")
        if self.kind == "registered" or self.name:
            self._check_registered()
            return
        if not (1 <= self.n_bits <= 62):
            fail("task.n_bits", f"must be an integer in 1..62, got {self.n_bits}")
        if not (1 <= self.parity_k <= self.n_bits):
            fail("task.parity_k", f"must be in 1..n_bits ({self.n_bits}), got {self.parity_k}")
        n_examples, space = self.n_examples, 2**self.n_bits
        if self.kind not in SEQUENCE_KINDS and (not (2 <= n_examples <= 1_000_000) or n_examples > space):
            fail("task.n_examples", f"must be in 2..min(1000000, 2**n_bits = {space}), got {n_examples}")
        if self.fresh_data and self.kind not in SEQUENCE_KINDS:
            fail("task.fresh_data", f"applies to task.kind {', '.join(repr(k) for k in SEQUENCE_KINDS)} only")
        if self.pairs not in ("all", "unordered"):
            fail("task.pairs", f"must be 'all' or 'unordered' (a <= b), got {self.pairs!r}")
        if self.pairs == "unordered" and self.kind != "modular":
            fail("task.pairs", "'unordered' applies to task.kind='modular' only")
        if self.kind == "s5":
            if self.formula not in S5_FORMULAS:
                fail("task.formula", f"for task.kind='s5' use one of {', '.join(S5_FORMULAS)}, got {self.formula!r}")
            return
        if self.kind == "sparse_parity":
            return
        if self.kind in SEQUENCE_KINDS:
            self._check_sequence()
            return
        # Parsing validates the formula (and prime p for division) with a clear message.
        from grokscope.formula import FormulaError, is_prime, parse_formula

        formulas = [f.strip() for f in self.formula.split(";")] if self.kind == "multi" else [self.formula]
        if self.kind == "multi" and (len(formulas) < 2 or len(formulas) > 16 or len(set(formulas)) != len(formulas)):
            fail("task.formula",
                 f"for task.kind='multi' give 2..16 distinct formulas separated by ';', got {self.formula!r}")
        for text in formulas:
            try:
                expr = parse_formula(text)
            except FormulaError as e:
                fail("task.formula", str(e))
            if expr.uses_division and not is_prime(self.p):
                fail("task.p", f"the formula {text!r} divides, which needs a prime p; {self.p} is not prime")

    def _check_registered(self) -> None:
        """``kind="registered"`` names a task registered with :func:`grokscope.tasks.register_task` (whether the name
        is registered is checked when the task is built: registrations live in the task floor)."""
        if self.kind != "registered":
            fail("task.name", f"applies to task.kind='registered' only (got task.kind={self.kind!r})")
        if not re.fullmatch(NAME_PATTERN, self.name):
            fail("task.name", f"must name a registered task (letters, digits, '_.:-', at most 100), got {self.name!r}")
        if self.pairs != "all" or self.fresh_data:
            fail("task.pairs" if self.pairs != "all" else "task.fresh_data", "does not apply to task.kind='registered'")

    def _check_sequence(self) -> None:
        """The fields of the Appendix D.3 tasks; ``n_examples`` must not exceed the number of distinct sequences."""
        if self.kind == "digit_addition":
            if not (1 <= self.n_digits <= 9):
                fail("task.n_digits", f"must be an integer in 1..9, got {self.n_digits}")
            space = 10 ** (2 * self.n_digits)
        else:
            if not (2 <= self.seq_len <= 512):
                fail("task.seq_len", f"must be an integer in 2..512, got {self.seq_len}")
            if not (2 <= self.n_tokens <= 10_000):
                fail("task.n_tokens", f"must be an integer in 2..10000, got {self.n_tokens}")
        if self.kind == "repeated_subsequence":
            T, R = self.seq_len, self.repeat_len
            if not (2 <= R <= T // 2):
                fail("task.repeat_len", f"must be in 2..seq_len // 2 = {T // 2} (two copies fit), got {R}")
            if self.n_tokens < T - R:
                fail("task.n_tokens",
                     f"must be >= seq_len - repeat_len = {T - R} (the other tokens are distinct), got {self.n_tokens}")
            space = (T - 2 * R + 1) * (T - 2 * R + 2) // 2 * math.perm(self.n_tokens, T - R)
        if self.kind == "skip_trigram":
            if self.n_tokens % 2:
                fail("task.n_tokens",
                     f"must be even (tokens below n_tokens / 2 are filler, the others answers), got {self.n_tokens}")
            half = self.n_tokens // 2
            space = (self.seq_len - 1) * half ** (self.seq_len - 1)
        if not (2 <= self.n_examples <= min(1_000_000, space)):
            why = "" if space > 1_000_000 else " (the number of distinct sequences of this task)"
            fail("task.n_examples", f"must be in 2..{min(1_000_000, space)}{why}, got {self.n_examples}")


SEQUENCE_KINDS = ("digit_addition", "repeated_subsequence", "skip_trigram")
TASK_KINDS = ("modular", "multi", "s5", "sparse_parity", *SEQUENCE_KINDS, "registered")
S5_FORMULAS = ("x*y", "x*y*x^-1", "x*y*x")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Network shape. ``arch="transformer"``: TransformerLens layout, only the MLP has biases (``biases``: "mlp";
    "all": TransformerLens's trained b_Q, b_K, b_V, b_O, b_in, b_out, b_U; "none": every bias a zero buffer).
    ``arch="mlp"``: embeddings of a and b summed into one hidden layer, then an unembedding (PAIR style).
    ``arch="vector_mlp"``: one hidden layer on the input read as a vector of numbers (sparse parity); no biases.
    ``arch="registered"``: your module registered under ``name`` (:func:`grokscope.models.register_model`).
    ``attn_only``: blocks without MLPs. ``dropout``: on the MLP hidden activations (training mode only).
    ``init_scale``: every initial parameter is multiplied by it (Omnigrok's alpha). The transformer knobs
    ``normalization_type``, ``use_attn_scale``, ``parallel_attn_mlp``, ``positional_embedding_type``, ``rotary_dim``,
    ``rotary_base``, ``d_vocab_out`` (None: the task's) have TransformerLens's meanings (docs/own-model-and-task.md).
    ``init_mode``: "nanda" (W ~ N(0, 1/d_model), W_U N(0, 1/d_vocab)) or TransformerLens's "gpt2" (N(0, 0.64/d_model)).
    ``fixed_embedding="circle"``: W_E of the number tokens frozen to the normalised (cos, sin) of frequency 1
    (arch='mlp', d_model=2; the PAIR 5-neuron model). ``output_scale``: logits multiplied by it on every forward
    (Kumar et al. 2024's alpha: large is lazy, small is rich; scale the lr with it, see docs/zoo.md; 1.0: as before)."""

    arch: str = "transformer"
    n_layers: int = 1
    d_model: int = 128
    n_heads: int = 4
    d_head: int = 32
    d_mlp: int = 512
    act_fn: str = "relu"
    tie_unembed: bool = False
    init_seed: int = 0
    attn_only: bool = False
    dropout: float = 0.0
    init_scale: float = 1.0
    fixed_embedding: str = "none"
    normalization_type: str | None = None
    use_attn_scale: bool = True
    parallel_attn_mlp: bool = False
    output_scale: float = 1.0
    positional_embedding_type: str = "standard"
    rotary_dim: int | None = None
    rotary_base: float = 10000.0
    d_vocab_out: int | None = None
    init_mode: str = "nanda"
    biases: str = "mlp"
    name: str = ""

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            fail("model.arch", f"unknown architecture {self.arch!r}; known: {', '.join(repr(a) for a in ARCHS)}")
        if (self.arch == "registered") != bool(self.name) or not re.fullmatch(NAME_PATTERN, self.name or "x"):
            fail("model.name", f"names a registered model (letters, digits, '_.:-', at most 100) with "
                 f"arch='registered', and only then; got {self.name!r} with arch={self.arch!r}")
        for name in ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "d_vocab_out"):  # d_vocab_out: or None
            value, top = getattr(self, name), 64 if name == "n_layers" else 65536
            if value is not None and not (1 <= value <= top):
                fail(f"model.{name}", f"must be an integer in 1..{top}, got {value}")
        if self.act_fn not in ACT_FNS:
            fail("model.act_fn", f"unknown activation {self.act_fn!r}; known: {', '.join(ACT_FNS)}")
        if self.tie_unembed and self.arch != "mlp":
            fail("model.tie_unembed", "tied embeddings are only offered for arch='mlp'")
        _check_seed("model.init_seed", self.init_seed)
        if not (0.0 <= self.dropout < 1.0):
            fail("model.dropout", f"must be in [0, 1), got {self.dropout}")
        for name in ("dropout", "parallel_attn_mlp"):
            if getattr(self, name) and self.attn_only:
                fail(f"model.{name}", "acts on the MLP, which an attention-only model (attn_only) does not have")
        if self.fixed_embedding not in ("none", "circle"):
            fail("model.fixed_embedding", f"must be 'none' or 'circle', got {self.fixed_embedding!r}")
        if self.fixed_embedding == "circle" and (self.arch != "mlp" or self.d_model != 2):
            fail("model.fixed_embedding", "'circle' needs arch='mlp' and d_model=2 (one cos and one sin dimension)")
        for name, known in (("normalization_type", NORMALIZATION_TYPES), ("positional_embedding_type", POS_TYPES),
                            ("init_mode", ("nanda", "gpt2")), ("biases", ("mlp", "all", "none"))):
            if getattr(self, name) not in known:
                fail(f"model.{name}", f"must be one of {', '.join(map(repr, known))}, got {getattr(self, name)!r}")
        for name, off in (("attn_only", False), ("normalization_type", None), ("use_attn_scale", True), ("d_vocab_out",
                          None), ("parallel_attn_mlp", False), ("positional_embedding_type", "standard"),
                          ("init_mode", "nanda"), ("biases", "mlp")):
            if getattr(self, name) != off and self.arch != "transformer":
                fail(f"model.{name}", "is a transformer knob: it needs arch='transformer'")
        if self.rotary_dim is not None and not (self.positional_embedding_type == "rotary"
                                                and 2 <= self.rotary_dim <= self.d_head and self.rotary_dim % 2 == 0):
            fail("model.rotary_dim", f"must be null (d_head) or even in 2..d_head, rotary only; got {self.rotary_dim}")
        for name in ("init_scale", "output_scale", "rotary_base"):
            if not (getattr(self, name) > 0 and math.isfinite(getattr(self, name))):
                fail(f"model.{name}", f"must be a finite number > 0, got {getattr(self, name)}")


ARCHS = ("transformer", "mlp", "vector_mlp", "registered")
ACT_FNS = ("relu", "gelu", "quadratic", "gelu_new", "silu", "solu")
NORMALIZATION_TYPES = (None, "LN", "LNPre", "RMS", "RMSPre")
POS_TYPES = ("standard", "rotary", "shortformer")


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    """AdamW with decoupled weight decay and a linear warm-up: lr_t = lr * min(t / warmup_steps, 1),
    t counting updates from 0 (so with warm-up the first update has learning rate 0, as in the paper's code).

    ``decay``: ``"l2"`` is AdamW's decoupled decay p <- p (1 - lr wd); ``"l1"`` is decoupled L1 decay, the
    proximal step p <- sign(p) max(|p| - lr wd, 0) after each update (exact zeros; AdamW's own decay off).
    ``grad_filter``: Grokfast (Lee et al. 2024) on each gradient before the step: ``"ema"`` mu <- alpha mu +
    (1 - alpha) g (mu starts at the first g), g <- g + lambda mu; ``"ma"`` g <- g + lambda mean(last
    ``filter_window`` gradients) once the window is full. ``perp_grad``: the perpendicular gradient of Prieto
    et al. (2025): per tensor g <- g - (w.g)/(w.w + 1e-30) w, rescaled to the norm of g, before the step.
    ``fixed_norm``: after each update rescale all trainable parameters to their initial global L2 norm
    (Omnigrok's constrained runs; use with weight_decay 0).

    ``optimizer``: ``"adamw"``, or ``"muon"``: Muon on the hidden weight matrices (learning rate lr_t *
    ``muon_lr_scale``, Nesterov momentum ``muon_momentum``, step scale ``muon_adjust_lr``), AdamW on the embeddings,
    unembedding and biases; each group decays by its own learning rate (:mod:`grokscope.training.muon`)."""

    lr: float = 1e-3
    weight_decay: float = 1.0
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-8
    warmup_steps: int = 10
    decay: str = "l2"
    grad_filter: str = "none"
    filter_alpha: float = 0.98
    filter_lambda: float = 2.0
    filter_window: int = 100
    perp_grad: bool = False
    fixed_norm: bool = False
    optimizer: str = "adamw"
    muon_momentum: float = 0.95
    muon_lr_scale: float = 1.0
    muon_adjust_lr: str = "match_rms_adamw"

    def __post_init__(self) -> None:
        if not (self.lr > 0 and math.isfinite(self.lr)):
            fail("optim.lr", f"must be a finite number > 0, got {self.lr}")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            fail("optim.weight_decay", f"must be a finite number >= 0, got {self.weight_decay}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            fail("optim.betas", f"must be two numbers in [0, 1), got {list(self.betas)}")
        if not (self.eps > 0):
            fail("optim.eps", f"must be > 0, got {self.eps}")
        if self.warmup_steps < 0:
            fail("optim.warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        if self.decay not in ("l2", "l1"):
            fail("optim.decay", f"must be 'l2' (decoupled AdamW decay) or 'l1' (decoupled L1), got {self.decay!r}")
        if self.grad_filter not in ("none", "ema", "ma"):
            fail("optim.grad_filter", f"must be 'none', 'ema' or 'ma' (Grokfast), got {self.grad_filter!r}")
        if not (0.0 <= self.filter_alpha < 1.0):
            fail("optim.filter_alpha", f"must be in [0, 1), got {self.filter_alpha}")
        if not (self.filter_lambda >= 0 and math.isfinite(self.filter_lambda)):
            fail("optim.filter_lambda", f"must be a finite number >= 0, got {self.filter_lambda}")
        if not (1 <= self.filter_window <= 10_000):
            fail("optim.filter_window", f"must be an integer in 1..10000, got {self.filter_window}")
        if self.optimizer not in ("adamw", "muon"):
            fail("optim.optimizer", f"must be 'adamw' or 'muon' (Muon on the hidden matrices), got {self.optimizer!r}")
        if not (0.0 <= self.muon_momentum < 1.0):
            fail("optim.muon_momentum", f"must be in [0, 1), got {self.muon_momentum}")
        if not (self.muon_lr_scale > 0 and math.isfinite(self.muon_lr_scale)):
            fail("optim.muon_lr_scale", f"must be a finite number > 0, got {self.muon_lr_scale}")
        if self.muon_adjust_lr not in ("match_rms_adamw", "original", "none"):
            fail("optim.muon_adjust_lr", f"must be 'match_rms_adamw', 'original' or 'none', "
                 f"got {self.muon_adjust_lr!r}")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """The training loop. One epoch is one pass over the training set (one step when full-batch).

    ``stop_after_grok``: when set to a factor f, training stops at the first logged epoch e with
    e >= f * grok_epoch, where grok_epoch is the first logged epoch with test accuracy >= 99%
    (the clean-up phase of the mainline ends at about 1.5x its grok epoch). ``None`` trains all epochs.

    ``flush_denormal``: flush subnormal floats to zero on every intra-op thread while training
    (:mod:`grokscope.runtime`); without it a step can run many times slower after grokking on x86 CPUs.

    ``device``: where to train: ``auto`` (CUDA, then MPS, then the CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``
    (:mod:`grokscope.device`). ``deterministic``: on CUDA, torch's deterministic algorithms (a run repeats bit for
    bit on the same GPU, somewhat slower); CPU runs are deterministic anyway. ``allow_tf32``: let CUDA compute
    float32 products in TF32 (faster, about 1e-3 relative error; off because the measures compare losses near 1e-7).
    ``compile``: ``torch.compile`` the forward with this mode ("none": eager; "reduce-overhead" uses CUDA graphs on a
    GPU), for the launch overhead; the compile time is in the meta. ``dynamics``: log relative_weight_change and
    ntk_alignment with the progress measures at any output scale (on whenever model.output_scale != 1)."""

    epochs: int = 40000
    batch_size: int | None = None
    loss_dtype: str = "float64"
    log_every: int = 10
    measure_every: int = 100
    checkpoint_every: int = 100
    checkpoint_early: bool = True
    stop_after_grok: float | None = None
    data_seed: int = 0
    fast_path: bool = True
    loss: str = "cross_entropy"
    softmax_collapse: bool = False
    dynamics: bool = False
    flush_denormal: bool = True
    device: str = "auto"
    deterministic: bool = False
    allow_tf32: bool = False
    compile: str = "none"

    def __post_init__(self) -> None:
        if not (1 <= self.epochs <= 10_000_000):
            fail("train.epochs", f"must be an integer in 1..10000000, got {self.epochs}")
        if self.batch_size is not None and self.batch_size < 1:
            fail("train.batch_size", f"must be >= 1 or null (full batch), got {self.batch_size}")
        if self.loss_dtype not in ("float32", "float64"):
            fail("train.loss_dtype", f"must be 'float32' or 'float64', got {self.loss_dtype!r}")
        for name in ("log_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                fail(f"train.{name}", f"must be >= 1, got {getattr(self, name)}")
        if self.measure_every < 0:
            fail("train.measure_every", f"must be >= 0 (0 turns progress measures off), got {self.measure_every}")
        if self.stop_after_grok is not None and not (self.stop_after_grok >= 1.0):
            fail("train.stop_after_grok", f"must be a factor >= 1 or null, got {self.stop_after_grok}")
        _check_seed("train.data_seed", self.data_seed)
        if self.loss not in ("cross_entropy", "stablemax"):
            fail("train.loss", f"must be 'cross_entropy' or 'stablemax', got {self.loss!r}")
        if self.compile not in COMPILE_MODES:
            fail("train.compile", f"must be one of {', '.join(map(repr, COMPILE_MODES))}, got {self.compile!r}")
        try:
            check_device_name(self.device)
        except ValueError as e:
            fail("train.device", str(e))


COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")


@dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
    """Everything that defines a run: same config, same run (bit for bit on the same machine)."""

    name: str = "experiment"
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.task.kind == "sparse_parity" and self.model.arch != "vector_mlp":
            fail("model.arch", "task.kind='sparse_parity' reads its bits as a vector: use arch='vector_mlp'")
        if self.model.arch == "vector_mlp" and self.task.kind != "sparse_parity":
            fail("model.arch", "arch='vector_mlp' is for task.kind='sparse_parity'")
        if self.task.kind in SEQUENCE_KINDS and self.model.arch != "transformer":
            fail("model.arch", f"task.kind={self.task.kind!r} is scored at several positions: use arch='transformer'")
        if self.task.kind in SEQUENCE_KINDS and self.train.softmax_collapse:
            fail("train.softmax_collapse",
                 f"is not available for task.kind={self.task.kind!r} (answers at several positions)")
        if self.model.arch == "mlp" and self.task.kind == "multi":
            fail("model.arch", "arch='mlp' reads two operands only; a multi-task needs arch='transformer'")
        if not self.name or len(self.name) > 200 or any(c in self.name for c in "/\\\0\n"):
            fail("name", f"must be 1..200 characters without '/', '\\\\', NUL or newline, got {self.name!r}")

    def to_dict(self) -> dict[str, Any]:
        return jsonable(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, data: Any) -> ExperimentConfig:
        return from_jsonable(cls, data)

    @classmethod
    def from_json(cls, text: str) -> ExperimentConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"config: not valid JSON ({e.msg} at line {e.lineno})") from None
        except RecursionError:
            raise ConfigError("config: not a config (JSON nested too deeply)") from None
        return cls.from_dict(data)


# --------------------------------------------------------------------------- helpers


def _check_seed(path: str, seed: int) -> None:
    if not (0 <= seed <= MAX_SEED):
        fail(path, f"must be an integer in 0..{MAX_SEED}, got {seed}")
