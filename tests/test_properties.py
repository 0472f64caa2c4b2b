"""Property-based tests (hypothesis): the formula parser against an independent evaluator and on junk input,
and the config's JSON round trip, override identity and field-named rejections."""

from __future__ import annotations

import json
import math
import sys

import torch
from hypothesis import HealthCheck, assume, given, reject, settings
from hypothesis import strategies as st

from grokscope.config import ACT_FNS, ConfigError, ExperimentConfig, apply_overrides, field_paths, parse_override
from grokscope.formula import MAX_LENGTH, FormulaError, parse_formula
from grokscope.presets import tiny

PRIMES = [5, 7, 11, 13, 17]
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------- formulas: an independent evaluator

# Trees: ("num", n) | ("var", "a"|"b") | ("neg", t) | (op, l, r) for op in + - * / | ("pow", t, k)
# | ("if", "a"|"b", parity, then, else) at the top.
LEAVES = st.one_of(st.integers(0, 10**6).map(lambda n: ("num", n)), st.sampled_from([("var", "a"), ("var", "b")]))


def _extend(children):
    return st.one_of(
        st.tuples(st.sampled_from(["+", "-", "*", "/"]), children, children),
        st.tuples(st.just("neg"), children),
        st.tuples(st.just("pow"), children, st.integers(0, 6)),
    )


EXPRS = st.recursive(LEAVES, _extend, max_leaves=10)
FORMULAS = st.one_of(
    EXPRS,
    st.tuples(st.just("if"), st.sampled_from(["a", "b"]), st.integers(0, 1), EXPRS, EXPRS),
)


def evaluate(node, a: int, b: int, p: int) -> int | None:
    """The value of a tree mod p with Python integers, or None where it divides by 0 mod p."""
    kind = node[0]
    if kind == "num":
        return node[1] % p
    if kind == "var":
        return (a if node[1] == "a" else b) % p
    if kind == "neg":
        v = evaluate(node[1], a, b, p)
        return None if v is None else -v % p
    if kind == "pow":
        v = evaluate(node[1], a, b, p)
        return None if v is None else pow(v, node[2], p)
    if kind == "if":
        chosen = node[3] if (a if node[1] == "a" else b) % p % 2 == node[2] else node[4]
        return evaluate(chosen, a, b, p)
    x, y = evaluate(node[1], a, b, p), evaluate(node[2], a, b, p)
    if x is None or y is None:
        return None
    if kind == "/":
        return None if y % p == 0 else x * pow(y, -1, p) % p
    return {"+": x + y, "-": x - y, "*": x * y}[kind] % p


# Binding strength of what a node renders to: + - 1, * / 2, unary minus 3, power 4, atoms 5.
LEVEL = {"+": 1, "-": 1, "*": 2, "/": 2, "neg": 3, "pow": 4, "num": 5, "var": 5}


def render(node, rnd) -> list[str]:
    """Tokens of the text of a tree with as few parentheses as the grammar allows (so precedence and
    associativity are tested), aliases x/y and ^ chosen at random."""

    def wrap(child, min_level):
        tokens = render(child, rnd)
        return tokens if LEVEL[child[0]] >= min_level else ["(", *tokens, ")"]

    kind = node[0]
    if kind == "num":
        return [str(node[1]) if rnd.random() < 0.9 else "0" + str(node[1])]
    if kind == "var":
        return [node[1] if rnd.random() < 0.7 else {"a": "x", "b": "y"}[node[1]]]
    if kind == "neg":
        return ["-", *wrap(node[1], 3)]
    if kind == "pow":
        return [*wrap(node[1], 5), rnd.choice(["**", "^"]), str(node[2])]
    if kind == "if":
        var = node[1] if rnd.random() < 0.7 else {"a": "x", "b": "y"}[node[1]]
        return [*render(node[3], rnd), "if", var, "is", ["even", "odd"][node[2]], "else", *render(node[4], rnd)]
    level = LEVEL[kind]
    return [*wrap(node[1], level), kind, *wrap(node[2], level + 1)]  # left-associative: the right side binds tighter


def depth(node) -> int:
    return 1 + max((depth(c) for c in node[1:] if isinstance(c, tuple)), default=0)


def uses_division(node) -> bool:
    return node[0] == "/" or any(isinstance(c, tuple) and uses_division(c) for c in node[1:])


def join(tokens: list[str], rnd) -> str:
    out = tokens[0]
    for prev, tok in zip(tokens, tokens[1:]):
        word = prev[-1].isalnum() and tok[0].isalnum()  # 'if a is odd' needs its spaces
        out += (" " if word else rnd.choice(["", "", " ", "  "])) + tok
    return out


@SETTINGS
@given(FORMULAS, st.sampled_from(PRIMES), st.randoms(use_true_random=False))
def test_the_parser_agrees_with_an_independent_evaluator(tree, p, rnd):
    text = join(render(tree, rnd), rnd)
    assume(len(text) <= MAX_LENGTH and depth(tree) <= 20)
    expr = parse_formula(text)
    assert expr.uses_division == uses_division(tree)
    grid = torch.arange(p * p)
    a, b = grid // p, grid % p
    values, valid = expr.evaluate(a, b, p)
    expected = [evaluate(tree, x, y, p) for x, y in zip(a.tolist(), b.tolist())]
    assert valid.tolist() == [v is not None for v in expected], text
    assert [v for v, ok in zip(values.tolist(), valid.tolist()) if ok] == [v for v in expected if v is not None], text


# --------------------------------------------------------------------------- formulas: junk never runs code

_WATCH: dict = {"on": False, "events": []}


def _audit(event: str, args) -> None:
    if _WATCH["on"]:
        _WATCH["events"].append(event)


sys.addaudithook(_audit)  # audit hooks cannot be removed; this one only records while _WATCH["on"]

PIECES = list("abxy0123456789 +-*/^()._[]{}'\"!@#$%&=<>,;:?\\|`~\t\n") + [
    "**",
    "__import__",
    "os",
    "system",
    "eval",
    "exec",
    "lambda",
    "open",
    "globals",
    "__class__",
    "__builtins__",
    "if",
    "is",
    "odd",
    "even",
    "else",
    "not",
    "and",
    "ａ",
    "١",
    "α",
    "\x00",
    "\u202e",
]
JUNK = st.one_of(st.lists(st.sampled_from(PIECES), max_size=30).map("".join), st.text(max_size=60))


@settings(max_examples=400, deadline=None)
@given(JUNK)
def test_junk_raises_only_the_parsers_error_and_never_runs_code(text):
    _WATCH["events"].clear()
    _WATCH["on"] = True
    try:
        expr = parse_formula(text)
    except FormulaError as e:
        expr, message = None, str(e)
        assert message and "\n" not in message
    finally:
        _WATCH["on"] = False
    assert _WATCH["events"] == [], (text, _WATCH["events"])  # no exec, compile, import, open, os.system, ...
    if expr is not None:  # a formula after all: its values are residues
        values, _ = expr.evaluate(torch.arange(13).repeat(13), torch.arange(13).repeat_interleave(13), 13)
        assert bool(((values >= 0) & (values < 13)).all())


# --------------------------------------------------------------------------- configs

MAX_SEED = 2**32 - 1
POSITIVE = st.floats(min_value=0, exclude_min=True, allow_infinity=False, allow_nan=False)
NONNEG = st.floats(min_value=0, allow_infinity=False, allow_nan=False)
UNIT_OPEN = st.floats(min_value=0, max_value=1, exclude_max=True)  # [0, 1)
NAMES = st.text(min_size=1, max_size=200).filter(lambda s: not any(c in s for c in "/\\\0\n"))
MODULAR = ["a+b", "a-b", "a*b", "a**2+b**2", "a/b", "(a+b)^3", "x/y if y is odd else x-y"]


@st.composite
def configs(draw) -> ExperimentConfig:
    kind = draw(st.sampled_from(["modular", "multi", "s5", "sparse_parity"]))
    formula = {
        "modular": st.sampled_from(MODULAR),
        "multi": st.sampled_from(["a+b;a-b", "a*b;a+b;a-b"]),
        "s5": st.sampled_from(["x*y", "x*y*x^-1", "x*y*x"]),
        "sparse_parity": st.just("a+b"),
    }[kind]
    formula = draw(formula)
    p = draw(st.sampled_from([5, 13, 97, 113, 1999]) if "/" in formula else st.integers(3, 2000))
    n_bits = draw(st.integers(1, 62))
    task = dict(
        kind=kind,
        formula=formula,
        p=p,
        train_fraction=draw(st.floats(0, 1, exclude_min=True)),
        split_seed=draw(st.integers(0, MAX_SEED)),
        n_train=draw(st.none() | st.integers(1, 10**6)),
        n_bits=n_bits,
        parity_k=draw(st.integers(1, n_bits)),
        n_examples=draw(st.integers(2, min(10**6, 2**n_bits))),
        pairs=draw(st.sampled_from(["all", "unordered"])) if kind == "modular" else "all",
    )
    arch = (
        "vector_mlp"
        if kind == "sparse_parity"
        else draw(st.sampled_from(["transformer", "mlp"] if kind == "modular" else ["transformer"]))
    )
    attn_only = arch == "transformer" and draw(st.booleans())
    circle = arch == "mlp" and draw(st.booleans())
    model = dict(
        arch=arch,
        n_layers=draw(st.integers(1, 64)),
        d_model=2 if circle else draw(st.integers(1, 65536)),
        n_heads=draw(st.integers(1, 65536)),
        d_head=draw(st.integers(1, 65536)),
        d_mlp=draw(st.integers(1, 65536)),
        act_fn=draw(st.sampled_from(["relu", "gelu", "quadratic"])),
        tie_unembed=arch == "mlp" and draw(st.booleans()),
        init_seed=draw(st.integers(0, MAX_SEED)),
        attn_only=attn_only,
        dropout=0.0 if attn_only else draw(UNIT_OPEN),
        init_scale=draw(POSITIVE),
        fixed_embedding="circle" if circle else "none",
    )
    optim = dict(
        lr=draw(POSITIVE),
        weight_decay=draw(NONNEG),
        betas=[draw(UNIT_OPEN), draw(UNIT_OPEN)],
        eps=draw(POSITIVE),
        warmup_steps=draw(st.integers(0, 10**6)),
        decay=draw(st.sampled_from(["l2", "l1"])),
        grad_filter=draw(st.sampled_from(["none", "ema", "ma"])),
        filter_alpha=draw(UNIT_OPEN),
        filter_lambda=draw(NONNEG),
        filter_window=draw(st.integers(1, 10_000)),
        perp_grad=draw(st.booleans()),
        fixed_norm=draw(st.booleans()),
    )
    train = dict(
        epochs=draw(st.integers(1, 10**7)),
        batch_size=draw(st.none() | st.integers(1, 10**6)),
        loss_dtype=draw(st.sampled_from(["float32", "float64"])),
        log_every=draw(st.integers(1, 10**6)),
        measure_every=draw(st.integers(0, 10**6)),
        checkpoint_every=draw(st.integers(1, 10**6)),
        checkpoint_early=draw(st.booleans()),
        stop_after_grok=draw(st.none() | st.floats(1, 1e6)),
        data_seed=draw(st.integers(0, MAX_SEED)),
        fast_path=draw(st.booleans()),
        loss=draw(st.sampled_from(["cross_entropy", "stablemax"])),
        softmax_collapse=draw(st.booleans()),
    )
    try:
        return ExperimentConfig.from_dict(
            {"name": draw(NAMES), "task": task, "model": model, "optim": optim, "train": train}
        )
    except ConfigError:
        reject()  # a cross-field rule this generator does not know (hypothesis fails the test if that is frequent)


@SETTINGS
@given(configs())
def test_a_config_survives_the_json_round_trip_exactly(cfg):
    text = cfg.to_json()
    back = ExperimentConfig.from_json(text)
    assert back == cfg and back.to_json() == text
    assert json.loads(text) == cfg.to_dict()


@SETTINGS
@given(configs())
def test_overriding_every_field_with_its_own_value_is_the_identity(cfg):
    paths = field_paths(cfg)
    assert apply_overrides(cfg, paths) == cfg
    # the same through the --set parser, each value written as JSON
    parsed = dict(parse_override(f"{k}={json.dumps(list(v) if isinstance(v, tuple) else v)}") for k, v in paths.items())
    assert apply_overrides(cfg, parsed) == cfg


def _outside(lo: int, hi: int):
    return st.integers(max_value=lo - 1) | st.integers(min_value=hi + 1)


NOT_A_NUMBER = (
    st.text(max_size=10).filter(lambda s: not _is_json_number(s)) | st.booleans() | st.lists(st.integers(), max_size=2)
)


def _is_json_number(s: str) -> bool:
    try:
        return isinstance(json.loads(s), (int, float))
    except (ValueError, RecursionError):
        return False


INVALID = st.one_of(
    st.tuples(st.just("task.p"), _outside(3, 2000)),
    st.tuples(st.just("task.p"), st.floats(allow_nan=True).filter(lambda x: not (math.isfinite(x) and x.is_integer()))),
    st.tuples(
        st.just("task.train_fraction"),
        st.floats(max_value=0) | st.floats(min_value=1, exclude_min=True) | st.just(math.nan),
    ),
    st.tuples(st.just("task.split_seed"), _outside(0, MAX_SEED)),
    st.tuples(
        st.just("task.kind"),
        st.text(max_size=12).filter(
            lambda s: (
                s
                not in (
                    "modular",
                    "multi",
                    "s5",
                    "sparse_parity",
                    "digit_addition",
                    "repeated_subsequence",
                    "skip_trigram",
                )
            )
        ),
    ),
    st.tuples(st.just("model.d_model"), _outside(1, 65536)),
    st.tuples(st.just("model.n_layers"), _outside(1, 64)),
    st.tuples(st.just("model.dropout"), st.floats(max_value=0, exclude_max=True) | st.floats(min_value=1)),
    st.tuples(st.just("model.act_fn"), st.text(max_size=12).filter(lambda s: s not in ACT_FNS)),
    st.tuples(st.just("model.init_seed"), _outside(0, MAX_SEED)),
    st.tuples(st.just("model.tie_unembed"), st.integers() | st.text(max_size=5)),
    st.tuples(st.just("optim.lr"), st.floats(max_value=0) | st.sampled_from([math.inf, math.nan])),
    st.tuples(st.just("optim.lr"), NOT_A_NUMBER),
    st.tuples(
        st.just("optim.weight_decay"), st.floats(max_value=0, exclude_max=True) | st.sampled_from([math.inf, math.nan])
    ),
    st.tuples(st.just("optim.betas"), st.lists(st.floats(0, 0.5), max_size=4).filter(lambda v: len(v) != 2)),
    st.tuples(
        st.just("optim.betas"),
        st.tuples(st.floats(min_value=1) | st.floats(max_value=0, exclude_max=True), st.floats(0, 0.5)),
    ),
    st.tuples(st.just("train.epochs"), _outside(1, 10_000_000)),
    st.tuples(st.just("train.epochs"), NOT_A_NUMBER),
    st.tuples(st.just("train.log_every"), st.integers(max_value=0)),
    st.tuples(st.just("train.batch_size"), st.integers(max_value=0)),
    st.tuples(st.just("train.stop_after_grok"), st.floats(max_value=1, exclude_max=True)),
    st.tuples(st.just("train.loss_dtype"), st.text(max_size=10).filter(lambda s: s not in ("float32", "float64"))),
    st.tuples(st.just("train.data_seed"), _outside(0, MAX_SEED)),
)


@settings(max_examples=300, deadline=None)
@given(INVALID)
def test_an_invalid_value_is_rejected_with_a_message_that_starts_with_its_field(case):
    path, value = case
    try:
        apply_overrides(tiny(), {path: value})
    except ConfigError as e:
        message = str(e)
    else:
        raise AssertionError(f"{path}={value!r} was accepted")
    assert message.startswith(path), message
    assert "\n" not in message and len(message) < 600, message
