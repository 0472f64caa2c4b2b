"""The local web viewer over a directory of runs (``grokscope serve``): read-only, loopback by default."""

from grokscope.serve.catalogue import find_runs, find_sweeps, metrics_payload
from grokscope.serve.server import ServeError, is_loopback, make_server, serve

__all__ = ["ServeError", "find_runs", "find_sweeps", "is_loopback", "make_server", "metrics_payload", "serve"]
