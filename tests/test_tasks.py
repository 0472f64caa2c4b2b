import torch

from grokscope.config import TaskConfig
from grokscope.tasks import make_task, split_indices


def test_mainline_split_sizes_and_layout():
    task = make_task(TaskConfig(p=113, train_fraction=0.3))
    assert task.tokens.shape == (113 * 113, 3) and task.is_full_grid
    assert task.train_idx.numel() == 3830 and task.test_idx.numel() == 8939
    assert torch.all(task.tokens[:, 2] == 113)
    assert (task.d_vocab, task.d_vocab_out, task.n_ctx) == (114, 113, 3)
    # row-major grid, a the slow index
    assert task.tokens[1].tolist() == [0, 1, 113] and task.tokens[113].tolist() == [1, 0, 113]
    assert torch.equal(task.labels, (task.tokens[:, 0] + task.tokens[:, 1]) % 113)


def test_split_is_a_deterministic_partition():
    tr, te = split_indices(100, 0.3, seed=5)
    tr2, te2 = split_indices(100, 0.3, seed=5)
    tr3, _ = split_indices(100, 0.3, seed=6)
    assert torch.equal(tr, tr2) and torch.equal(te, te2)
    assert not torch.equal(tr, tr3)
    assert sorted(torch.cat([tr, te]).tolist()) == list(range(100))
    assert tr.numel() == 30


def test_full_fraction_leaves_no_test_set():
    task = make_task(TaskConfig(p=7, train_fraction=1.0))
    assert task.train_idx.numel() == 49 and task.test_idx.numel() == 0


def test_division_task_excludes_zero_divisors():
    task = make_task(TaskConfig(p=7, formula="a/b", train_fraction=0.5))
    assert task.tokens.shape[0] == 7 * 6 and not task.is_full_grid
    assert torch.all(task.tokens[:, 1] != 0)
    a, b = task.tokens[:, 0], task.tokens[:, 1]
    assert torch.all((task.labels * b) % 7 == a)
    assert torch.equal(task.pair_index, a * 7 + b)
