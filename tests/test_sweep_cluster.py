"""The Ray executor on clusters: a head node and a worker node on loopback, the worker node lost mid-sweep, outcomes
identical to the local executor's; and the resources its tasks ask for (one GPU per job when the cells run on CUDA),
on a local Ray instance that declares GPUs (no GPU is needed: Ray only counts them and sets CUDA_VISIBLE_DEVICES).
Skipped when Ray is not installed."""

import os
import threading
import time
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")

from grokscope.sweep.layout import SweepDir, SweepError  # noqa: E402
from grokscope.sweep.local import run_sweep  # noqa: E402
from grokscope.sweep.ray_executor import CRASH_ONCE_ENV, RayExecutor  # noqa: E402
from grokscope.sweep.spec import expand, make_spec  # noqa: E402

#: Index columns that depend on when and where a cell ran, not on what it computed.
TIMING = ["seconds", "updated", "executor"]
#: Every node on loopback. Not 127.0.0.1: Ray rewrites an address of 127.0.0.1 (or localhost) into the machine's own
#: network address before connecting; any other address of 127.0.0.0/8 it takes as it is.
LOOPBACK = "127.0.0.2"


def local_outcomes(name: str, out: Path, device: str | None = None):
    """The local executor's index of the same sweep, packed as Ray packs it (two ensembles of two cells; that
    ensembles of other sizes give the same numbers is test_sweep_ray's and test_ensemble's business)."""
    return run_sweep(
        spec(name), out, workers=0, max_ensemble=2, device=device, progress=False, log=lambda s: None
    ).frame


def spec(name: str = "c"):
    return make_spec(
        name=name,
        base="tiny",
        set={"train.epochs": 30},
        axes={"optim.weight_decay": [0.0, 1.0], "task.train_fraction": [0.5, 0.8]},
        seeds=1,
        outcome={"tau": 5},
    )


def outcomes(frame):
    """The index rows minus the timing columns, as text (NaN and None compare equal)."""
    return frame.drop(columns=[c for c in TIMING if c in frame.columns]).astype(str)


def attempts(hooks: Path) -> list[tuple[int, tuple[str, ...]]]:
    path = hooks / "attempts.log"
    lines = path.read_text().splitlines() if path.is_file() else []
    return [(int(pid), tuple(names)) for pid, *names in (line.split() for line in lines)]


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def two_nodes(tmp_path):
    """A head node and a worker node (one CPU each) on loopback; the workers' testing hook (CRASH_ONCE_ENV) armed
    with ``crashed`` (no crash) and ``hold``. Always shut down, and the environment restored."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "crashed").write_text("disarmed")
    (hooks / "hold").write_text("")
    before = os.environ.get(CRASH_ONCE_ENV)
    os.environ[CRASH_ONCE_ENV] = str(hooks)  # the nodes' processes inherit it, so their workers see it
    cluster = None
    try:
        nodes = {"num_cpus": 1, "num_gpus": 0, "node_ip_address": LOOPBACK}
        cluster = cluster_utils.Cluster(initialize_head=True, head_node_args=nodes)
        worker = cluster.add_node(**nodes)
        cluster.wait_for_nodes()
        yield cluster, worker, hooks
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        if before is None:
            os.environ.pop(CRASH_ONCE_ENV, None)
        else:
            os.environ[CRASH_ONCE_ENV] = before


def test_a_worker_node_lost_mid_sweep_changes_no_outcome(two_nodes, tmp_path):
    cluster, worker, hooks = two_nodes
    local = local_outcomes("c", tmp_path / "local", "cpu")  # the CPU on any machine: bit for bit comparable

    result: dict = {}

    def drive() -> None:
        try:
            result["res"] = run_sweep(
                spec(),
                tmp_path / "ray",
                executor=RayExecutor(address=cluster.address),
                device="cpu",
                progress=False,
                log=lambda s: None,
            )
        except BaseException as e:  # noqa: BLE001 - reported by the test below
            result["error"] = e

    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    # two jobs (ensembles of two cells) on two one-CPU nodes: one runs on each, held before training
    wait_for(lambda: len(attempts(hooks)) >= 2 or not driver.is_alive(), 120, "a job to start on each node")
    assert len(attempts(hooks)) == 2, result
    cluster.remove_node(worker, allow_graceful=False)
    (hooks / "hold").unlink()
    driver.join(timeout=180)
    assert not driver.is_alive(), "the sweep did not finish after the node was lost"
    assert "error" not in result, result.get("error")
    res = result["res"]
    assert not res.errors and set(res.frame["status"]) == {"completed"}
    tries = attempts(hooks)
    jobs = [tuple(e["cells"]) for e in SweepDir(tmp_path / "ray").events() if e["event"] == "job"]
    assert len(jobs) == 2 and sorted(names for _, names in tries[:2]) == sorted(jobs)
    # the job of the lost node ran again (on the head); the other ran once
    assert len(tries) == 3 and tries[2][1] in jobs
    assert outcomes(res.frame).equals(outcomes(local))


@pytest.fixture
def ray_with_gpus(tmp_path):
    """A local Ray instance declaring two GPUs (this machine needs none: Ray counts them and sets each task's
    CUDA_VISIBLE_DEVICES; torch in the task still sees no CUDA device, so ``auto`` cells train on the CPU)."""
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address=LOOPBACK)
    yield
    ray.shutdown()


def test_tasks_ask_for_a_gpu_when_cells_run_on_cuda(ray_with_gpus):
    config = expand(spec())[0].config
    ex = RayExecutor(address="auto", threads=1)
    p = ex.place("cuda", config, None)
    assert ex.task_options() == {"num_cpus": 1, "num_gpus": 1, "max_retries": 3}
    assert (p.workers, p.gpus_per_job, p.max_ensemble) == (2, 1, 64) and "1 GPU each" in p.describe()
    ex.place("auto", config, 8)  # auto on a cluster with GPUs is CUDA
    assert ex.task_options()["num_gpus"] == 1
    p = ex.place("cpu", config, None)
    assert ex.task_options()["num_gpus"] == 0 and (p.workers, p.max_ensemble) == (2, 16)
    with pytest.raises(SweepError, match="on Ray give 'cuda'"):
        ex.place("cuda:1", config, None)


def test_gpu_jobs_run_with_the_gpu_ray_gave_them(ray_with_gpus, tmp_path):
    """``auto`` on a cluster with GPUs: every job asks for one GPU; Ray sets each task's CUDA_VISIBLE_DEVICES to the
    GPU it holds, which the cell's worker label records; the outcomes are the local executor's."""
    local = local_outcomes("g", tmp_path / "local")
    res = run_sweep(
        spec("g"), tmp_path / "ray", executor=RayExecutor(address="auto"), progress=False, log=lambda s: None
    )
    assert not res.errors
    cells = [e for e in SweepDir(tmp_path / "ray").events() if e["event"] == "cell"]
    gpus = {e["worker"].rpartition(" gpu ")[2] for e in cells}
    assert len(cells) == 4 and all(" gpu " in e["worker"] for e in cells) and gpus <= {"0", "1"}
    start = next(e for e in SweepDir(tmp_path / "ray").events() if e["event"] == "start")
    assert "1 GPU each" in start["placement"]
    if not torch.cuda.is_available():  # with real CUDA, some tasks compute on a GPU: close, not equal
        assert outcomes(res.frame).equals(outcomes(local))


def test_cuda_on_a_cluster_without_gpus_is_one_line(tmp_path):
    ray.init(num_cpus=1, num_gpus=0, include_dashboard=False, log_to_driver=False, _node_ip_address=LOOPBACK)
    try:
        with pytest.raises(SweepError, match="the Ray cluster has no GPUs"):
            run_sweep(
                spec(),
                tmp_path / "s",
                executor=RayExecutor(address="auto"),
                device="cuda",
                progress=False,
                log=lambda s: None,
            )
        assert not (tmp_path / "s").exists()
    finally:
        ray.shutdown()
