"""The Ray executor against a local Ray instance started here (skipped when Ray is not installed)."""

import pytest

ray = pytest.importorskip("ray")

from faults_util import interrupted_at_update  # noqa: E402

from grokscope.sweep.index import load_sweep  # noqa: E402
from grokscope.sweep.layout import SweepDir  # noqa: E402
from grokscope.sweep.local import run_sweep  # noqa: E402
from grokscope.sweep.ray_executor import CRASH_ONCE_ENV, RayExecutor, pack_dir, unpack_dir  # noqa: E402
from grokscope.sweep.spec import make_spec  # noqa: E402
from grokscope.training import train  # noqa: E402

COLUMNS = ["name", "status", "phase", "train_epoch", "test_epoch", "gap", "grok_epoch", "final_train_acc", "final_test_acc", "final_test_loss"]


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    marker = tmp_path_factory.mktemp("crash")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": {CRASH_ONCE_ENV: str(marker)}})
    yield marker
    ray.shutdown()


def spec():
    return make_spec(name="r", base="tiny", set={"train.epochs": 30}, axes={"optim.weight_decay": [0.0, 1.0], "task.train_fraction": [0.5, 0.8]}, seeds=1, outcome={"tau": 5})


def test_ray_gives_the_same_outcomes_as_local_and_retries_a_lost_worker(local_ray, tmp_path):
    local = run_sweep(spec(), tmp_path / "local", workers=0, progress=False, log=lambda s: None).frame
    ex = RayExecutor(threads=1)
    res = run_sweep(spec(), tmp_path / "ray", executor=ex, progress=False, log=lambda s: None)
    assert not res.errors
    remote = res.frame
    assert (local_ray / "crashed").is_file(), "the test hook should have killed one worker mid-job"
    assert set(remote["status"]) == {"completed"} and set(remote["executor"]) == {"ray"}
    assert local[COLUMNS].astype(str).equals(remote[COLUMNS].astype(str))
    # the driver wrote the runs: complete run directories, no temporary leftovers
    cells = tmp_path / "ray" / "cells"
    assert sorted(p.name for p in cells.iterdir() if not p.name.startswith(".")) == sorted(remote["name"])
    assert not [p for p in cells.iterdir() if p.name.startswith((".incoming", ".trash"))]
    # rerun: nothing to do
    again = run_sweep(spec(), tmp_path / "ray", executor=RayExecutor(threads=1), progress=False, log=lambda s: None)
    assert again.ran == 0
    assert load_sweep(tmp_path / "ray")["phase"].tolist() == remote["phase"].tolist()


def test_ray_resumes_a_cell_interrupted_locally(local_ray, tmp_path):
    s = make_spec(name="r2", base="tiny", set={"train.epochs": 30, "train.checkpoint_every": 10}, axes={"optim.weight_decay": [1.0]}, seeds=1)
    with interrupted_at_update(15):
        run_sweep(s, tmp_path / "s", workers=0, progress=False, log=lambda s: None)
    res = run_sweep(s, tmp_path / "s", executor=RayExecutor(threads=1), progress=False, log=lambda s: None)
    assert res.frame["status"].tolist() == ["completed"]
    hows = [e.get("how") for e in SweepDir(tmp_path / "s").events() if e["event"] == "cell"]
    assert hows == ["resume"]
    from grokscope.store.run import Run
    from grokscope.sweep.spec import expand

    cell = expand(s)[0]
    ref = train(cell.config, tmp_path / "ref", progress=False).metrics
    got = Run(tmp_path / "s" / "cells" / cell.name).metrics
    assert got[["train_loss", "test_acc"]].equals(ref[["train_loss", "test_acc"]])


def test_pack_round_trip(tmp_path):
    d = tmp_path / "a"
    (d / "sub").mkdir(parents=True)
    (d / "x.json").write_text("1")
    (d / "sub" / "y.bin").write_bytes(b"\0\1")
    (d / "z.lock").write_text("")
    unpack_dir(pack_dir(d), tmp_path / "b")
    assert sorted(p.relative_to(tmp_path / "b").as_posix() for p in (tmp_path / "b").rglob("*")) == ["sub", "sub/y.bin", "x.json"]
