"""Binary operations mod p as a supervised dataset: inputs ``a b =`` and the label ``formula(a, b) mod p``."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from grokscope.config import TaskConfig
from grokscope.formula import parse_formula


class SplitViews:
    """The train/test views every task offers, read from its ``tokens``, ``labels``, ``train_idx`` and ``test_idx``."""

    tokens: torch.Tensor
    labels: torch.Tensor
    train_idx: torch.Tensor
    test_idx: torch.Tensor

    @property
    def train_tokens(self) -> torch.Tensor:
        return self.tokens[self.train_idx]

    @property
    def train_labels(self) -> torch.Tensor:
        return self.labels[self.train_idx]

    @property
    def test_tokens(self) -> torch.Tensor:
        return self.tokens[self.test_idx]

    @property
    def test_labels(self) -> torch.Tensor:
        return self.labels[self.test_idx]


@dataclass(frozen=True, eq=False)
class ModularTask(SplitViews):
    """The full table of a modular task and its deterministic train/test split.

    Tokens are ``[a, b, =]`` with ``=`` the token ``p``; ``d_vocab = p + 1``, ``d_vocab_out = p``.
    Rows follow the row-major (a, b) grid with ``a`` the slow index; pairs where the formula is
    undefined (a divisor that is 0 mod p) are left out of ``tokens``, and so are pairs with a > b when
    ``config.pairs == "unordered"``.
    """

    config: TaskConfig
    tokens: torch.Tensor  # [N, 3] int64, every valid pair
    labels: torch.Tensor  # [N] int64
    pair_index: torch.Tensor  # [N] int64, a * p + b: the row of each example in the full p*p grid
    train_idx: torch.Tensor  # [N_train] int64, rows of `tokens`
    test_idx: torch.Tensor  # [N_test] int64

    @property
    def p(self) -> int:
        return self.config.p

    @property
    def d_vocab(self) -> int:
        return self.config.p + 1

    @property
    def d_vocab_out(self) -> int:
        return self.config.p

    @property
    def n_ctx(self) -> int:
        return 3

    @property
    def is_full_grid(self) -> bool:
        """True when every one of the p*p pairs is an example (no division by zero left out)."""
        return self.tokens.shape[0] == self.p * self.p



def split_indices(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded permutation of range(n); the first round-down(fraction * n) entries train (at least one).

    Returns sorted (train, test) index tensors so that the row order never depends on the split.
    """
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen)
    n_train = max(1, min(n, int(fraction * n)))
    return perm[:n_train].sort().values, perm[n_train:].sort().values


def split_rows(config: TaskConfig, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The train/test split of a task with n rows: ``task.n_train`` rows when set, else ``train_fraction``."""
    if config.n_train is None:
        return split_indices(n, config.train_fraction, config.split_seed)
    if config.n_train > n:
        from grokscope.config import ConfigError

        raise ConfigError(f"task.n_train: {config.n_train} is more than the task's {n} examples")
    return _split_count(n, config.n_train, config.split_seed)


def _split_count(n: int, n_train: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen)
    return perm[:n_train].sort().values, perm[n_train:].sort().values


def make_modular_task(config: TaskConfig) -> ModularTask:
    p = config.p
    expr = parse_formula(config.formula)
    grid = torch.arange(p * p, dtype=torch.int64)
    a, b = grid // p, grid % p
    values, valid = expr.evaluate(a, b, p)
    if config.pairs == "unordered":
        valid &= a <= b
    a, b, values, pair_index = a[valid], b[valid], values[valid], grid[valid]
    tokens = torch.stack([a, b, torch.full_like(a, p)], dim=1)
    train_idx, test_idx = split_rows(config, tokens.shape[0])
    return ModularTask(
        config=config, tokens=tokens, labels=values, pair_index=pair_index, train_idx=train_idx, test_idx=test_idx
    )
