"""The run store: run directories, the SQLite metrics database, safetensors checkpoints, atomic writes."""

from grokscope.store.files import atomic_write_bytes, atomic_write_json, load_tensors, save_tensors
from grokscope.store.metrics import MetricsDB
from grokscope.store.run import Run, RunError, checkpoint_path, is_run_dir, load_run, save_checkpoint

__all__ = [
    "MetricsDB",
    "Run",
    "RunError",
    "atomic_write_bytes",
    "atomic_write_json",
    "checkpoint_path",
    "is_run_dir",
    "load_run",
    "load_tensors",
    "save_checkpoint",
    "save_tensors",
]
