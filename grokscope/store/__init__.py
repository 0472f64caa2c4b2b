"""The run store: run directories, the SQLite metrics database, safetensors checkpoints, atomic writes."""

from grokscope.store.errors import DamagedFileError, RunError, StoreWriteError
from grokscope.store.files import atomic_write_bytes, atomic_write_json, load_tensors, save_tensors
from grokscope.store.metrics import MetricsDB
from grokscope.store.run import Run, check_run, checkpoint_path, is_run_dir, load_run, save_checkpoint

__all__ = [
    "DamagedFileError", "MetricsDB", "Run", "RunError", "StoreWriteError", "atomic_write_bytes", "atomic_write_json",
    "check_run", "checkpoint_path", "is_run_dir", "load_run", "load_tensors", "save_checkpoint", "save_tensors",
]
