"""``train.compile``: the training loop's forward under ``torch.compile``, for the launch overhead of a step.

:func:`compile_forward` takes the loop's :class:`~grokscope.models.forward.ForwardChoice` and returns one whose
``fn`` runs ``torch.compile(fn, mode=..., dynamic=False)`` (same path, ``why`` naming the mode), and the meta keys
that say how: ``compile`` (the mode in effect, "none" when the run fell back to eager) and ``compile_note``. The
function it wraps is called with a handful of shapes in a run (the training batch, a smaller last batch, the
evaluation's rows) in two grad modes; each (shape, grad mode, train/eval mode) compiles once (on the fast path a
few times in its first calls, as dynamo's guards on its plan cache's Python state fail while the cache fills;
bounded by dynamo's recompile limit), so a run compiles a few graphs and never once per step. Its cost is written
into the meta as it becomes known: ``compile_seconds`` (the first few calls of each signature, forward and
backward, timed: their time above the fastest of them) and ``compile_signatures`` (how many were met).

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

__all__ = ["TIMED_CALLS", "CompiledForward", "compile_forward"]

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


#: Calls of a signature timed (forward and backward): dynamo may compile a signature again on its next few calls
#: (a guard on Python state the forward reads, such as the fast path's plan cache filling up), so a few are timed.
TIMED_CALLS = 4


class CompiledForward:
    """A compiled forward that falls back to the eager one when compiling fails, and measures what compiling costs.

    ``eager``: the function that was compiled (``tokens -> logits``); ``compiled``: what ``torch.compile`` made of
    it. A signature (the tokens' shape, the grad mode, the module's train/eval mode) compiles on its first call
    (and again on a later one where a guard on Python state fails), its backward on that call's first backward
    (inductor compiles it lazily). So the first :data:`TIMED_CALLS` calls of each signature are timed, forward and
    backward (from the gradient reaching the logits to the last parameter's gradient: autograd hooks, the numbers
    untouched), and their time above the fastest of them is that signature's compile. :attr:`compile_seconds`: the
    compile time so far (a signature met fewer times counts all but its fastest call's time once more, so a
    signature met once counts its one call whole); ``signatures``: how many were met; ``fallback``: why the calls
    go to ``eager`` (None while compiled)."""

    def __init__(self, eager: Callable[[Tensor], Tensor], compiled: Callable[[Tensor], Tensor], *,
                 write_meta: MetaWriter | None = None, sync: bool = False):
        self.eager, self.compiled = eager, compiled
        self.module = getattr(eager, "model", eager)  # the nn.Module whose train/eval mode compiles separately
        self.samples: dict[tuple, list[list[float | None]]] = {}  # signature -> [forward s, backward s] per call
        self.measured: set[tuple] = set()  # signatures timed TIMED_CALLS times: their compile is in self.seconds
        self.seconds = 0.0
        self.fallback: str | None = None
        self.write_meta = write_meta
        self.sync = sync  # CUDA: wait for the device before reading the clock (timed calls only)
        self.written = ""

    @property
    def signatures(self) -> int:
        return len(self.measured) + len(self.samples)

    def __call__(self, tokens: Tensor) -> Tensor:
        if self.fallback is not None:
            return self.eager(tokens)
        key = (tuple(tokens.shape), tokens.dtype, torch.is_grad_enabled(), getattr(self.module, "training", None))
        if key in self.measured or len(self.samples.get(key, ())) >= TIMED_CALLS:
            return self.compiled(tokens)  # the steady state: a set lookup on top of the compiled call
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
        """A timed call is complete: once a signature's timed calls all are, its compile moves into ``seconds``;
        the meta gets the new total."""
        totals = _totals(self.samples[key])
        if len(totals) == TIMED_CALLS:
            self.seconds += sum(totals) - len(totals) * min(totals)
            del self.samples[key]
            self.measured.add(key)
        meta = {"compile_seconds": f"{self.compile_seconds:.2f}", "compile_signatures": str(self.signatures)}
        if repr(meta) != self.written:
            self.written = repr(meta)
            self._write(meta)

    @property
    def compile_seconds(self) -> float:
        """The compile time measured so far: :attr:`seconds` and the signatures still being timed."""
        pending = (_totals(samples) for samples in self.samples.values())
        return self.seconds + sum(sum(t) - (len(t) - 1) * min(t) for t in pending if t)

    def _clock(self) -> float:
        if self.sync:
            torch.cuda.synchronize()
        return time.perf_counter()

    def _write(self, meta: Mapping[str, str]) -> None:
        if self.write_meta is not None:
            self.write_meta(meta)


def _totals(samples: list[list[float | None]]) -> list[float]:
    """Forward plus backward seconds of each complete timed call."""
    return [(f or 0.0) + b for f, b in samples if b is not None]


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
