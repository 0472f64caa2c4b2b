"""The non-modular tasks of Nanda et al. (2023), Appendix D.3: answers at several positions of a sequence.

Each builder returns a :class:`SequenceTask`: ``tokens`` [N, T] and ``labels`` [N, T], the next-token target at
every position that is scored and :data:`IGNORE` (-1) elsewhere. The model reads every position
(``forward_all``); the loss is the mean cross-entropy over the scored positions, accuracy the fraction of
scored tokens predicted right. ``slots`` [N, T] numbers the scored positions of a row (answer token 0, 1, ...;
-1 elsewhere) for per-position metrics.

* ``digit_addition`` (``n_digits`` = n): ``a b`` uniform in 0..10^n - 1, tokens ``a_1..a_n + b_1..b_n = s_0..s_{n-1}``
  (digits most significant first, zero-padded; ``+`` = 10, ``=`` = 11) with ``s = a + b`` in n + 1 digits; the
  position of ``=`` and of ``s_j`` predict ``s_0`` and ``s_{j+1}``: n + 1 answer tokens, T = 3n + 2.
* ``repeated_subsequence`` (``seq_len`` T, ``n_tokens`` V, ``repeat_len`` R): T - R distinct tokens in random
  order, then a random block of R of them is copied to a later, non-overlapping place; the positions of the copy
  predict its next token (R - 1 answers; the copy's first token cannot be predicted). Only the copy repeats
  tokens, so "the token after the earlier occurrence of the current token" is always the answer (an induction
  head). Needs V >= T - R.
* ``skip_trigram`` (``seq_len`` T, ``n_tokens`` V even): T - 1 tokens, all below V/2 but exactly one (at a
  uniform position), then ``=`` (token V); the answer at ``=`` is the one token >= V/2 (V/2 skip trigrams).

The fixed dataset is ``n_examples`` distinct sequences drawn with ``split_seed``; ``task.fresh_data`` trains on a new
batch from :meth:`SequenceTask.fresh_batch` every epoch instead (the paper's "infinite data" runs).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from grokscope.config import SEQUENCE_KINDS, TaskConfig
from grokscope.tasks.modular import SplitViews, split_rows

__all__ = ["IGNORE", "SEQUENCE_KINDS", "SequenceTask", "answer_view", "make_sequence_task", "sample_sequences",
           "sequence_metrics"]

IGNORE = -1
#: Fresh-batch generators are seeded from this offset, far from any split seed (which seeds the fixed dataset).
_FRESH_SEED_OFFSET = 2**40


@dataclass(frozen=True, eq=False)
class SequenceTask(SplitViews):
    """A dataset of sequences with targets at several positions, and its deterministic split."""

    config: TaskConfig
    tokens: Tensor  # [N, T] int64
    labels: Tensor  # [N, T] int64, IGNORE where a position is not scored
    train_idx: Tensor  # [N_train] int64, rows of `tokens`
    test_idx: Tensor  # [N_test]
    d_vocab: int
    d_vocab_out: int
    slot_names: tuple[str, ...]  # one name per answer slot, e.g. ("ans0", ..., "ans5")

    @property
    def n_ctx(self) -> int:
        return self.tokens.shape[1]

    @property
    def slots(self) -> Tensor:
        """[N, T] int64: the answer slot of each scored position, -1 elsewhere."""
        return _slots(self.labels)

    def fresh_batch(self, size: int, seed: int, epoch: int) -> tuple[Tensor, Tensor]:
        """``size`` new sequences (tokens, labels) [size, T] for one epoch, seeded by (seed, epoch) alone, so a
        resumed run draws the same batches. They may, rarely, coincide with held-out rows."""
        gen = torch.Generator().manual_seed(_FRESH_SEED_OFFSET + seed * 10_000_019 + epoch)
        return sample_sequences(self.config, size, gen)


def _slots(labels: Tensor) -> Tensor:
    scored = labels != IGNORE
    return torch.where(scored, scored.cumsum(dim=1) - 1, torch.full_like(labels, -1))


# --------------------------------------------------------------------------- samplers


def _digits(x: Tensor, n: int) -> Tensor:
    """[N] non-negative -> [N, n] decimal digits, most significant first."""
    powers = 10 ** torch.arange(n - 1, -1, -1, dtype=torch.int64)
    return (x[:, None] // powers) % 10


def _digit_addition(cfg: TaskConfig, size: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    n = cfg.n_digits
    a = torch.randint(0, 10**n, (size,), generator=gen)
    b = torch.randint(0, 10**n, (size,), generator=gen)
    s = _digits(a + b, n + 1)  # [size, n + 1]
    plus, eq = torch.full((size, 1), 10), torch.full((size, 1), 11)
    tokens = torch.cat([_digits(a, n), plus, _digits(b, n), eq, s[:, :n]], dim=1)  # [size, 3n + 2]
    labels = torch.full_like(tokens, IGNORE)
    labels[:, 2 * n + 1 :] = s
    return tokens, labels


def _repeated_subsequence(cfg: TaskConfig, size: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    T, V, R = cfg.seq_len, cfg.n_tokens, cfg.repeat_len
    starts = torch.tensor([(s1, s2) for s2 in range(R, T - R + 1) for s1 in range(s2 - R + 1)], dtype=torch.int64)
    pick = starts[torch.randint(0, starts.shape[0], (size,), generator=gen)]
    s1, s2 = pick[:, :1], pick[:, 1:]  # [size, 1]
    filler = torch.rand(size, V, generator=gen).argsort(dim=1)[:, : T - R]  # distinct tokens, random order
    t = torch.arange(T)[None, :]
    src = torch.where(t < s2, t, torch.where(t < s2 + R, s1 + t - s2, t - R))  # filler index of each position
    tokens = torch.gather(filler, 1, src)
    labels = torch.full_like(tokens, IGNORE)
    nxt = torch.cat([tokens[:, 1:], tokens[:, :1]], dim=1)
    scored = (t >= s2) & (t < s2 + R - 1)
    labels[scored] = nxt[scored]
    return tokens, labels


def _skip_trigram(cfg: TaskConfig, size: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    T, V = cfg.seq_len, cfg.n_tokens
    half = V // 2
    tokens = torch.randint(0, half, (size, T), generator=gen)
    where = torch.randint(0, T - 1, (size,), generator=gen)
    big = torch.randint(half, V, (size,), generator=gen)
    tokens[torch.arange(size), where] = big
    tokens[:, -1] = V  # "="
    labels = torch.full_like(tokens, IGNORE)
    labels[:, -1] = big
    return tokens, labels


_SAMPLERS = {"digit_addition": _digit_addition, "repeated_subsequence": _repeated_subsequence,
             "skip_trigram": _skip_trigram}


def sample_sequences(config: TaskConfig, size: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """``size`` i.i.d. sequences of the task: tokens, labels [size, T] int64 (labels IGNORE where not scored)."""
    return _SAMPLERS[config.kind](config, size, gen)


# --------------------------------------------------------------------------- the dataset


def _vocab(config: TaskConfig) -> tuple[int, int, int]:
    """(d_vocab, d_vocab_out, number of answer slots)."""
    if config.kind == "digit_addition":
        return 12, 10, config.n_digits + 1
    if config.kind == "repeated_subsequence":
        return config.n_tokens, config.n_tokens, config.repeat_len - 1
    return config.n_tokens + 1, config.n_tokens, 1


def make_sequence_task(config: TaskConfig) -> SequenceTask:
    """``n_examples`` distinct sequences (the first distinct ones drawn with ``split_seed``), split by
    ``n_train`` (or ``train_fraction``)."""
    gen = torch.Generator().manual_seed(config.split_seed)
    count = config.n_examples
    seen: dict[tuple[int, ...], int] = {}
    toks, labs = [], []
    while len(seen) < count:
        tokens, labels = sample_sequences(config, max(2 * count, 64), gen)
        for row, key in enumerate(map(tuple, tokens.tolist())):
            if len(seen) == count:
                break
            if key not in seen:
                seen[key] = len(seen)
                toks.append(tokens[row])
                labs.append(labels[row])
    tokens, labels = torch.stack(toks), torch.stack(labs)
    train_idx, test_idx = split_rows(config, count)
    d_vocab, d_vocab_out, n_slots = _vocab(config)
    return SequenceTask(
        config=config, tokens=tokens, labels=labels, train_idx=train_idx, test_idx=test_idx,
        d_vocab=d_vocab, d_vocab_out=d_vocab_out, slot_names=tuple(f"ans{j}" for j in range(n_slots)),
    )


# --------------------------------------------------------------------------- scoring


def answer_view(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """The scored positions only: logits [N, T, C], labels [N, T] -> [M, C], [M] (M scored positions)."""
    keep = labels != IGNORE
    return logits[keep], labels[keep]


def sequence_metrics(task: SequenceTask, logits: Tensor, loss_dtype: torch.dtype = torch.float64) -> dict[str, float]:
    """Per answer slot ``{split}_{loss|acc}_ans{j}`` (when a row has more than one answer) and ``{split}_seq_acc``
    (the fraction of rows with every answer token right). ``logits``: [N, T, d_vocab_out] over every row."""
    out: dict[str, float] = {}
    slots = task.slots
    for split, idx in (("train", task.train_idx), ("test", task.test_idx)):
        if not idx.numel():
            continue
        z, y, s = logits[idx], task.labels[idx], slots[idx]
        right = (z.argmax(-1) == y) | (y == IGNORE)
        out[f"{split}_seq_acc"] = right.all(dim=1).to(torch.float64).mean().item()
        if len(task.slot_names) > 1:
            for j, name in enumerate(task.slot_names):
                keep = s == j
                out[f"{split}_loss_{name}"] = F.cross_entropy(z[keep].to(loss_dtype), y[keep]).item()
                out[f"{split}_acc_{name}"] = right[keep].to(torch.float64).mean().item()
    return out
