"""``train.compile``: the training loop's forward under ``torch.compile``, for the launch overhead of a step.

:func:`compile_forward` takes the loop's :class:`~grokscope.models.forward.ForwardChoice` and returns one whose
``fn`` runs ``torch.compile(fn, mode=..., dynamic=False)`` (same path, ``why`` naming the mode), and the meta keys
that say how: ``compile`` (the mode in effect, "none" when the run fell back to eager) and ``compile_note``. The
function it wraps is called with a handful of shapes in a run (the training batch, a smaller last batch, the
evaluation's rows) in two grad modes; each (shape, grad mode, train/eval mode) compiles once, so a run compiles at
most a few graphs and never once per step. Its cost is written into the meta as it becomes known:
``compile_seconds`` (for each signature, its first call's time, forward and backward, less its second call's:
the compile; a signature met once counts its first call's whole time) and ``compile_signatures`` (how many were
met).

Where it cannot apply, the run is eager and ``compile_note`` says why: on MPS (torch's inductor backend for MPS is
a prototype), where ``torch.compile`` refuses this Python or torch, and where compiling fails on a first call (a
CPU without a C++ compiler, a missing Triton): that call is answered by the eager function, and every later one.
``reduce-overhead`` (CUDA graphs) is accepted on the CPU, where it compiles as ``default`` (the note says so).

Numerics: the compiled forward computes the same function as the eager one to float32 rounding, not bitwise (fused
kernels sum in other orders), so a compiled run matches an eager one to float32 tolerance and a compiled run
resumed compiled or eager continues to that tolerance. TF32 stays as :func:`grokscope.device.device_settings` set it
(inductor reads the same switches) and torch's deterministic algorithms, when on, are honoured by inductor's
lowerings; with ``train.deterministic`` inductor also skips the on-device benchmarking that picks kernels by
speed. ``train.compile="none"`` (the default) never reaches this module: the loop's forward is the eager one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from grokscope.models.forward import ForwardChoice

__all__ = ["CompiledForward", "compile_forward"]

MetaWriter = Callable[[Mapping[str, str]], None]


def compile_forward(choice: ForwardChoice, mode: str, device: torch.device, *, deterministic: bool = False,
                    write_meta: MetaWriter | None = None,
                    compiler: Callable[..., Callable[[Tensor], Tensor]] | None = None
                    ) -> tuple[ForwardChoice, dict[str, str]]:
    """``choice`` with its function compiled in ``mode`` (one of config.COMPILE_MODES), and the meta keys to record
    (``compile``, ``compile_note``). ``write_meta``: called with ``compile_seconds`` and ``compile_signatures`` (and
    with ``compile``/``compile_note`` again after a fall-back) as they become known. ``compiler``: stands in for
    ``torch.compile`` (tests). ``mode="none"``: ``choice`` itself and no meta."""
    if mode == "none":
        return choice, {}
    if device.type == "mps":
        return choice, eager_meta(f"train.compile={mode!r} is not applied on MPS (torch's inductor backend for MPS is "
                                  "a prototype)")
    note = ""
    if mode == "reduce-overhead" and device.type != "cuda":
        note = f"reduce-overhead on {device.type} compiles as 'default' (its CUDA graphs need a GPU)"
    options = deterministic_options(mode) if deterministic else None
    kwargs: dict[str, Any] = {"mode": mode} if options is None else {"options": options}
    compile_fn: Callable[..., Any] = torch.compile if compiler is None else compiler
    try:
        compiled = compile_fn(choice.fn, dynamic=False, **kwargs)
    except Exception as e:  # torch refuses this Python / platform (it says so when asked to compile)
        return choice, eager_meta(f"torch.compile refused: {first_line(e)}")
    fn = CompiledForward(choice.fn, compiled, write_meta=write_meta, sync=device.type == "cuda")
    compiled_choice = ForwardChoice(fn=fn, path=choice.path, why=f"{choice.why}; torch.compile mode={mode}")
    return compiled_choice, {"compile": mode, "compile_note": note}


class CompiledForward:
    """A compiled forward that falls back to the eager one when compiling fails, and measures what compiling costs.

    ``eager``: the function that was compiled (``tokens -> logits``); ``compiled``: what ``torch.compile`` made of
    it. A signature (the tokens' shape, the grad mode, the module's train/eval mode) compiles on its first call, its
    backward on that call's first backward (inductor compiles it lazily). So each of its first two calls is timed,
    forward and backward (from the gradient reaching the logits to the last parameter's gradient: autograd hooks,
    the numbers untouched), and the first's time less the second's is that signature's compile. ``seconds``: the
    compile time of the signatures timed twice (:attr:`compile_seconds`: all of it); ``signatures``: how many were
    met; ``fallback``: why the calls go to ``eager`` (None while compiled)."""

    def __init__(self, eager: Callable[[Tensor], Tensor], compiled: Callable[[Tensor], Tensor], *,
                 write_meta: MetaWriter | None = None, sync: bool = False):
        self.eager, self.compiled = eager, compiled
        self.module = getattr(eager, "model", eager)  # the nn.Module whose train/eval mode compiles separately
        self.samples: dict[tuple, list[list[float | None]]] = {}  # signature -> [forward s, backward s] of 2 calls
        self.measured: set[tuple] = set()
        self.seconds = 0.0
        self.fallback: str | None = None
        self.write_meta = write_meta
        self.sync = sync  # CUDA: wait for the device before reading the clock (first two calls of a signature only)

    @property
    def signatures(self) -> int:
        return len(self.measured) + len(self.samples)

    def __call__(self, tokens: Tensor) -> Tensor:
        if self.fallback is not None:
            return self.eager(tokens)
        key = (tuple(tokens.shape), tokens.dtype, torch.is_grad_enabled(), getattr(self.module, "training", None))
        if key in self.measured or len(self.samples.get(key, ())) >= 2:
            return self.compiled(tokens)  # the steady state: one set lookup on top of the compiled call
        t0 = self._clock()
        if key not in self.samples:
            try:
                out = self.compiled(tokens)
            except Exception as e:  # compiling failed (or the computation itself: then eager raises it too)
                out = self.eager(tokens)
                self.fall_back(f"compiling failed: {first_line(e)}")
                return out
        else:
            out = self.compiled(tokens)
        self._time_backward(key, out, self._clock() - t0)
        return out

    def fall_back(self, why: str) -> None:
        """Send every later call to the eager function, and say why in the meta."""
        self.fallback = why
        self._write(eager_meta(why))

    def _time_backward(self, key: tuple, out: Tensor, forward_seconds: float) -> None:
        sample: list[float | None] = [forward_seconds, None]
        self.samples.setdefault(key, []).append(sample)
        params = [p for p in self.module.parameters() if p.requires_grad] \
            if isinstance(self.module, torch.nn.Module) else []
        if not (out.requires_grad and out.grad_fn is not None and params):
            sample[1] = 0.0  # no backward through this call
            self._settle(key)
            return
        began: list[float] = []
        handles: list[Any] = []

        def at_start(grad_outputs):
            began.append(self._clock())

        def at_end(grads):
            if began:  # this call's backward (not another graph's) has reached every parameter
                for handle in handles:
                    handle.remove()
                sample[1] = self._clock() - began[0]
                self._settle(key)

        handles.append(out.grad_fn.register_prehook(at_start))
        handles.append(torch.autograd.graph.register_multi_grad_hook(params, at_end))

    def _settle(self, key: tuple) -> None:
        """Once a signature's first two calls are timed, add the first's extra time to the compile seconds; the meta
        counts a signature met once by its first call's whole time (the compile, to a few milliseconds)."""
        samples = self.samples[key]
        if len(samples) >= 2 and samples[0][1] is not None and samples[1][1] is not None:
            (f1, b1), (f2, b2) = samples[0], samples[1]
            self.seconds += max(0.0, (f1 or 0.0) + (b1 or 0.0) - (f2 or 0.0) - (b2 or 0.0))
            del self.samples[key]
            self.measured.add(key)
        elif len(samples) > 1 or samples[0][1] is None:
            return
        self._write({"compile_seconds": f"{self.compile_seconds:.2f}", "compile_signatures": str(self.signatures)})

    @property
    def compile_seconds(self) -> float:
        """The compile time measured so far: :attr:`seconds` plus the whole first call of each signature met once."""
        once = sum((s[0][0] or 0.0) + (s[0][1] or 0.0) for s in self.samples.values() if s[0][1] is not None)
        return self.seconds + once

    def _clock(self) -> float:
        if self.sync:
            torch.cuda.synchronize()
        return time.perf_counter()

    def _write(self, meta: Mapping[str, str]) -> None:
        if self.write_meta is not None:
            self.write_meta(meta)


def eager_meta(why: str) -> dict[str, str]:
    """The meta of a run asked to compile that runs eager: ``compile`` none, ``compile_note`` why."""
    return {"compile": "none", "compile_note": f"{why}; the run is eager"}


def first_line(e: BaseException) -> str:
    """An exception as one short line: its type and the first line of its message."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


def deterministic_options(mode: str) -> dict[str, Any] | None:
    """``mode``'s inductor options plus inductor's own deterministic switch (no kernel chosen by timing it on the
    device), or None where this torch's inductor has no such switch (then the mode alone)."""
    try:
        import torch._inductor as inductor
        from torch._inductor import config
    except Exception:  # an inductor that does not import: torch.compile reports it on the first call
        return None
    if not hasattr(config, "deterministic") or not hasattr(inductor, "list_mode_options"):
        return None
    return dict(inductor.list_mode_options(mode)) | {"deterministic": True}
