"""An ensemble member equals a single run of its config, and is stored as a complete run."""

import pytest
import torch

from grokscope.config import apply_overrides
from grokscope.store.run import Run
from grokscope.training import train
from grokscope.training.ensemble import Ensemble, train_ensemble

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def base(tiny_config):
    return apply_overrides(
        tiny_config,
        {"task.p": 11, "train.epochs": 12, "train.log_every": 4, "train.checkpoint_every": 6, "train.measure_every": 0},
    )


def test_members_match_single_runs(tmp_path, base):
    configs = [
        apply_overrides(base, {"name": "a", "model.init_seed": 1}),
        apply_overrides(base, {"name": "b", "model.init_seed": 2, "optim.lr": 1e-3, "optim.weight_decay": 0.3}),
        apply_overrides(base, {"name": "c", "task.split_seed": 4, "task.train_fraction": 0.7}),
    ]
    runs = train_ensemble(configs, [tmp_path / f"e{k}" for k in range(3)], progress=False)
    for k, cfg in enumerate(configs):
        single = train(cfg, tmp_path / f"s{k}", progress=False)
        member = runs[k]
        assert member.config == cfg
        assert member.checkpoints == single.checkpoints
        me, ms = member.metrics, single.metrics
        assert list(me.columns) == list(ms.columns) and list(me.index) == list(ms.index)
        assert ((me - ms).abs() <= 1e-5 * ms.abs() + 1e-7).all().all()
        a, b = member.load_state_dict(), single.load_state_dict()
        assert set(a) == set(b)
        for name in b:
            assert torch.allclose(a[name], b[name], rtol=1e-4, atol=1e-5), name
        assert member.meta["status"] == "completed" and member.meta["forward"] == "ensemble"


def test_float64_ensemble_step_matches_torch_adamw(base):
    """Same init, three steps: the vectorised per-member AdamW does what torch.optim.AdamW does."""
    from grokscope.models import build_model
    from grokscope.models.forward import choose_forward
    from grokscope.tasks import make_task
    from grokscope.training.loop import train_step
    from grokscope.training.optim import lr_at, make_optimizer

    configs = [
        apply_overrides(base, {"optim.lr": lr, "optim.weight_decay": wd, "optim.warmup_steps": 1})
        for lr, wd in ((1e-3, 1.0), (3e-3, 0.1))
    ]
    ens = Ensemble(configs, dtype=torch.float64)
    for k, cfg in enumerate(configs):
        task = make_task(cfg.task)
        model = build_model(cfg.model, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=3).double()
        opt = make_optimizer(model, cfg.optim)
        fwd = choose_forward(model, task, fast=cfg.train.fast_path).fn
        for step in range(3):
            train_step(fwd, opt, task.train_tokens, task.train_labels, lr_at(step, cfg.optim), torch.float64)
        configs[k] = model
    for _ in range(3):
        ens.step()
    for k, model in enumerate(configs):
        for name, t in ens.member_state_dict(k).items():
            assert torch.allclose(t, model.state_dict()[name], rtol=1e-12, atol=1e-14), name


def test_member_resumes_as_a_single_run(tmp_path, base):
    from grokscope.training import resume

    cfg = apply_overrides(base, {"train.epochs": 6})
    (member,) = train_ensemble([cfg], [tmp_path / "m"], progress=False)
    longer = apply_overrides(cfg, {"train.epochs": 12})
    (tmp_path / "m" / "config.json").write_text(longer.to_json())  # extend the run, then continue it alone
    Run(tmp_path / "m").set_meta({"status": "running"})  # as if it had been stopped at epoch 6
    resumed = resume(tmp_path / "m", progress=False)
    single = train(longer, tmp_path / "s", progress=False)
    assert max(resumed.checkpoints) == 12
    a, b = resumed.load_state_dict(), single.load_state_dict()
    for name in b:
        assert torch.allclose(a[name], b[name], rtol=1e-4, atol=1e-5), name


@pytest.mark.parametrize(
    "override,field",
    [
        ({"task.p": 13}, "task.p"),
        ({"model.d_mlp": 32}, "model.d_mlp"),
        ({"optim.betas": [0.9, 0.99]}, "optim.betas"),
        ({"train.epochs": 3}, "train.epochs"),
    ],
)
def test_configs_that_differ_elsewhere_are_refused(tmp_path, base, override, field):
    with pytest.raises(ValueError, match=field):
        train_ensemble([base, apply_overrides(base, override)], [tmp_path / "a", tmp_path / "b"])
    assert not (tmp_path / "a").exists()


def test_other_architectures_and_bad_arguments_are_refused(tmp_path, base):
    with pytest.raises(ValueError, match="n_layers"):
        train_ensemble([apply_overrides(base, {"model.n_layers": 2})], [tmp_path / "a"])
    with pytest.raises(ValueError, match="output directories"):
        train_ensemble([base, base], [tmp_path / "a"])
    with pytest.raises(ValueError, match="at least one"):
        train_ensemble([], [])


def test_an_interrupted_ensemble_releases_its_databases_at_once(tmp_path, base, monkeypatch):
    real, calls = Ensemble.step, {"n": 0}

    def crashing_step(self):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(Ensemble, "step", crashing_step)
    configs = [apply_overrides(base, {"model.init_seed": k}) for k in range(2)]
    dirs = [tmp_path / f"e{k}" for k in range(2)]
    with pytest.raises(KeyboardInterrupt) as excinfo:
        train_ensemble(configs, dirs, progress=False)
    assert excinfo.value.__traceback__ is not None  # the frames holding the databases are alive
    for d in dirs:
        wal = d / "metrics.sqlite-wal"
        assert not wal.exists() or wal.stat().st_size == 0, d


def test_each_member_is_updated_by_the_single_runs_adamw_bit_for_bit(base):
    """Given the same gradients, a member's update is the single run's AdamW (grokscope.training.adamw), exactly;
    a frozen member is left alone."""
    from grokscope.training.adamw import AdamW

    configs = [
        apply_overrides(base, {"optim.lr": lr, "optim.weight_decay": wd}) for lr, wd in ((1e-3, 1.0), (3e-3, 0.1))
    ]
    ens = Ensemble(configs)
    singles = []
    for k, c in enumerate(configs):
        params = [ens.w[n][k].detach().clone().requires_grad_() for n in ens.names]
        singles.append(
            (
                params,
                AdamW(params, lr=c.optim.lr, betas=c.optim.betas, eps=c.optim.eps, weight_decay=c.optim.weight_decay),
            )
        )
    gen = torch.Generator().manual_seed(0)
    lrs = torch.tensor([c.optim.lr for c in configs], dtype=torch.float64)
    for _ in range(4):
        for n in ens.names:
            ens.w[n].grad = torch.randn(ens.w[n].shape, generator=gen) * 1e-3
        ens._adamw(lrs)
        for k, (params, opt) in enumerate(singles):
            for p, n in zip(params, ens.names):
                p.grad = ens.w[n].grad[k].clone()
            opt.step()
    for k, (params, _) in enumerate(singles):
        for p, n in zip(params, ens.names):
            assert torch.equal(p.detach(), ens.w[n][k].detach()), (k, n)
    frozen = {n: ens.w[n][1].detach().clone() for n in ens.names}
    ens.active[1] = False
    ens._adamw(lrs)
    assert all(torch.equal(frozen[n], ens.w[n][1].detach()) for n in ens.names)
