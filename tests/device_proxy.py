"""A stand-in for ``torch`` whose factory functions refuse a call without ``device=`` (issue 20's device note).

A factory call without a device makes a CPU tensor whatever the device of the tensors it is combined with, so a
module that does so breaks on CUDA. There is no GPU in most test runs, so the check is on the code: a test replaces a
module's ``torch`` with :class:`StrictTorch` (:func:`strict`), runs the module's computations and asserts they give
exactly what they give without it. Used by tests/test_analysis_device.py and tests/test_interp_device.py.
"""

import torch

#: The factory functions checked: each makes a new tensor on the CPU unless told otherwise. (``*_like`` functions
#: follow their argument and are left alone; ``randperm`` is here because the seeded draws are made on the CPU on
#: purpose, which the code then says with ``device="cpu"``.)
FACTORIES = (
    "arange",
    "as_tensor",
    "empty",
    "eye",
    "full",
    "linspace",
    "ones",
    "rand",
    "randint",
    "randn",
    "randperm",
    "tensor",
    "zeros",
)


class StrictTorch:
    """``torch``, except that its factory functions raise unless they are given a device."""

    def __getattr__(self, name):
        attr = getattr(torch, name)
        if name not in FACTORIES:
            return attr

        def checked(*args, **kwargs):
            if kwargs.get("device") is None:
                raise AssertionError(f"torch.{name} called without device=: it would make a CPU tensor")
            return attr(*args, **kwargs)

        return checked


def strict(monkeypatch, modules):
    """Replace the ``torch`` of each module of ``modules`` by a :class:`StrictTorch` for the test."""
    for module in modules:
        monkeypatch.setattr(module, "torch", StrictTorch())
