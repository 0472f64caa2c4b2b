"""Tasks beyond one modular formula: multi-task mixtures, S5 composition and sparse parity.

Each builder returns a :class:`TableTask`, which offers what the training loop reads from a
:class:`~grokscope.tasks.ModularTask` (``tokens``, ``labels``, ``train_idx``, ``test_idx``, ``d_vocab``,
``d_vocab_out``, ``n_ctx`` and the train/test views) plus optional per-example ``groups`` (the operation
of a multi-task row) for per-task metrics.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import Tensor

from grokscope.config import TaskConfig
from grokscope.formula import parse_formula
from grokscope.tasks.modular import SplitViews, split_rows

__all__ = ["S5_PERMUTATIONS", "TableTask", "make_multi_task", "make_parity_task", "make_s5_task", "s5_table"]


@dataclass(frozen=True, eq=False)
class TableTask(SplitViews):
    """A finite supervised dataset with a deterministic split (the generic sibling of ``ModularTask``)."""

    config: TaskConfig
    tokens: Tensor  # [N, n_ctx] int64
    labels: Tensor  # [N] int64
    train_idx: Tensor  # [N_train] int64, rows of `tokens`
    test_idx: Tensor  # [N_test]
    d_vocab: int
    d_vocab_out: int
    groups: Tensor | None = None  # [N] int64: the group (operation) of each row, or None
    group_names: tuple[str, ...] = ()

    @property
    def n_ctx(self) -> int:
        return self.tokens.shape[1]


# --------------------------------------------------------------------------- multi-task


def make_multi_task(config: TaskConfig) -> TableTask:
    """Formulas ``f_0; f_1; ...`` mod p in one table: inputs ``[a, op_i, b, =]`` with ``=`` = p and
    ``op_i`` = p + 1 + i (``d_vocab = p + 1 + n_ops``, ``d_vocab_out = p``). Rows: operation-major, then the
    (a, b) grid; undefined pairs (division by 0) are left out. One split over all rows."""
    p = config.p
    formulas = [f.strip() for f in config.formula.split(";")]
    grid = torch.arange(p * p, dtype=torch.int64)
    a, b = grid // p, grid % p
    toks, labels, groups = [], [], []
    for i, text in enumerate(formulas):
        values, valid = parse_formula(text).evaluate(a, b, p)
        ai, bi = a[valid], b[valid]
        toks.append(torch.stack([ai, torch.full_like(ai, p + 1 + i), bi, torch.full_like(ai, p)], dim=1))
        labels.append(values[valid])
        groups.append(torch.full_like(ai, i))
    tokens = torch.cat(toks)
    train_idx, test_idx = split_rows(config, tokens.shape[0])
    return TableTask(
        config=config, tokens=tokens, labels=torch.cat(labels), train_idx=train_idx, test_idx=test_idx,
        d_vocab=p + 1 + len(formulas), d_vocab_out=p, groups=torch.cat(groups), group_names=tuple(formulas),
    )


# --------------------------------------------------------------------------- S5

#: The 120 permutations of {0..4} in lexicographic order; token i is S5_PERMUTATIONS[i].
S5_PERMUTATIONS: tuple[tuple[int, ...], ...] = tuple(itertools.permutations(range(5)))


def s5_table(formula: str) -> Tensor:
    """[120, 120] int64: entry (x, y) is the index of formula(x, y), with (x*y)(i) = x(y(i))."""
    perms = torch.tensor(S5_PERMUTATIONS, dtype=torch.int64)  # [120, 5]
    code = (perms * torch.tensor([5**4, 5**3, 5**2, 5, 1])).sum(1)
    lookup = torch.full((5**5,), -1, dtype=torch.int64)
    lookup[code] = torch.arange(120)
    inverse = torch.argsort(perms, dim=1)  # x^-1 as arrays

    def compose(x: Tensor, y: Tensor) -> Tensor:  # [..., 5] arrays: (x*y)(i) = x[y[i]]
        return torch.gather(x, -1, y)

    X = perms[:, None, :].expand(120, 120, 5)
    Y = perms[None, :, :].expand(120, 120, 5)
    xy = compose(X, Y)
    if formula == "x*y":
        out = xy
    elif formula == "x*y*x^-1":
        out = compose(xy, inverse[:, None, :].expand(120, 120, 5))
    elif formula == "x*y*x":
        out = compose(xy, X)
    else:
        raise ValueError(f"task.formula: unknown S5 formula {formula!r}")
    return lookup[(out * torch.tensor([5**4, 5**3, 5**2, 5, 1])).sum(-1)]


def make_s5_task(config: TaskConfig) -> TableTask:
    """Composition in S5: inputs ``[x, y, =]`` (``=`` is token 120), label ``formula(x, y)``; rows x-major."""
    table = s5_table(config.formula).reshape(-1)
    grid = torch.arange(120 * 120, dtype=torch.int64)
    tokens = torch.stack([grid // 120, grid % 120, torch.full_like(grid, 120)], dim=1)
    train_idx, test_idx = split_rows(config, tokens.shape[0])
    return TableTask(config=config, tokens=tokens, labels=table, train_idx=train_idx, test_idx=test_idx, d_vocab=121,
                     d_vocab_out=120)


# --------------------------------------------------------------------------- sparse parity


def make_parity_task(config: TaskConfig) -> TableTask:
    """Sparse parity (PAIR): ``n_examples`` distinct random n-bit sequences (seeded by ``split_seed``), each followed by
    a constant 1 (the bias input); label = parity of the first ``parity_k`` bits. tokens [N, n_bits + 1] in {0, 1}."""
    n, count = config.n_bits, config.n_examples
    gen = torch.Generator().manual_seed(config.split_seed)
    if 2**n <= 4 * count:
        values = torch.randperm(2**n, generator=gen)[:count]
    else:
        seen: dict[int, None] = {}
        while len(seen) < count:
            for v in torch.randint(0, 2**n, (2 * count,), generator=gen).tolist():
                seen.setdefault(v, None)
        values = torch.tensor(list(seen)[:count], dtype=torch.int64)
    bits = (values[:, None] >> torch.arange(n)) & 1  # [N, n]
    tokens = torch.cat([bits, torch.ones(count, 1, dtype=torch.int64)], dim=1)
    labels = bits[:, : config.parity_k].sum(1) % 2
    train_idx, test_idx = split_rows(config, count)
    return TableTask(config=config, tokens=tokens, labels=labels, train_idx=train_idx, test_idx=test_idx, d_vocab=2,
                     d_vocab_out=2)
