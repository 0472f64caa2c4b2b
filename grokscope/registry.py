"""Names for things users bring: a registry of builders by name, filled by calls and by packages' entry points.

Tasks (:mod:`grokscope.tasks.registry`) and models (:mod:`grokscope.models.registry`) each keep one
:class:`Registry`. A name is registered by a call (``register_task``, ``register_model``) in the process that uses
it, or by an installed package through an entry point group (``grokscope.tasks``, ``grokscope.models``), which every
process (a sweep's worker, the command line) reads on its first look-up of a name it does not know.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from grokscope.config_fields import ConfigError

__all__ = ["Registry"]

B = TypeVar("B", bound=Callable)


class Registry(Generic[B]):
    """Builders by name. ``what``: "task" or "model" (messages); ``field``: the config field that names one
    ("task.name"); ``group``: the entry point group; ``how``: the call that registers one (for messages)."""

    def __init__(self, what: str, field: str, group: str, how: str) -> None:
        self.what, self.field, self.group, self.how = what, field, group, how
        self._builders: dict[str, B] = {}
        self.entry_points_read = False  # entry points are read once, on the first look-up of an unknown name

    def register(self, name: str, builder: B, *, replace: bool = False) -> B:
        """Register ``builder`` under ``name`` (the caller has checked the name's rules); returns it. A name registered
        to another builder is an error unless ``replace``."""
        if not callable(builder):
            raise TypeError(f"{self.how}({name!r}): the builder must be callable, got {type(builder).__name__}")
        if not replace and self._builders.get(name, builder) is not builder:
            raise ValueError(f"{self.what} {name!r} is registered already; pass replace=True to replace it")
        self._builders[name] = builder
        return builder

    def unregister(self, name: str) -> None:
        """Forget ``name`` (no error when it is not registered)."""
        self._builders.pop(name, None)

    def names(self) -> tuple[str, ...]:
        """The registered names (entry points included), sorted."""
        self._load_entry_points()
        return tuple(sorted(self._builders))

    def get(self, name: str) -> B:
        """The builder registered as ``name``; ConfigError (one line naming the registered ones) when there is none."""
        if name not in self._builders:
            self._load_entry_points()
        builder = self._builders.get(name)
        if builder is None:
            known = ", ".join(repr(n) for n in sorted(self._builders)) or "none"
            raise ConfigError(f"{self.field}: no {self.what} registered as {name!r} (registered: {known}); register it "
                              f"with {self.how} or a {self.group!r} entry point")
        return builder

    def _load_entry_points(self) -> None:
        if self.entry_points_read:
            return
        self.entry_points_read = True
        from importlib.metadata import entry_points

        for ep in entry_points(group=self.group):
            if ep.name not in self._builders:
                try:
                    self._builders[ep.name] = ep.load()
                except Exception as e:  # a broken plugin names itself, it does not break the others
                    raise ConfigError(f"{self.field}: the entry point {ep.name!r} ({ep.value}) failed to load: "
                                      f"{e}") from e
