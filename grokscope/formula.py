"""A small, safe parser for modular formulas in ``a`` and ``b`` (never Python ``eval``).

Grammar (usual precedence, ``**``/``^`` right-associative and binding tighter than unary minus)::

    formula := expr ('if' VAR 'is' ('odd' | 'even') 'else' formula)?
    expr   := term (('+' | '-') term)*
    term   := unary (('*' | '/') unary)*
    unary  := '-' unary | power
    power  := atom (('**' | '^') INT)?
    atom   := INT | 'a' | 'b' | '(' expr ')'

``x`` and ``y`` are accepted as aliases of ``a`` and ``b``. Division is multiplication by the
modular inverse; pairs whose divisor is 0 mod p are excluded from the task (for a conditional, only
where the dividing branch is taken). The one conditional form tests the parity of an operand's
representative in 0..p-1, as in Power et al. (2022): ``x/y if y is odd else x-y``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

MAX_LENGTH = 200
MAX_EXPONENT = 64
MAX_DEPTH = 50


class FormulaError(ValueError):
    """The formula cannot be parsed; the message says where and why."""


_TOKEN = re.compile(r"\s*(?:(\d+)|(\*\*|[-+*/^()])|([A-Za-z_]\w*))")
_VARS = {"a": "a", "b": "b", "x": "a", "y": "b"}
_KEYWORDS = ("if", "is", "odd", "even", "else")


@dataclass(frozen=True)
class Expr:
    """A parsed formula: a tree of ('num', n) | ('var', 'a'|'b') | ('neg', e) | (op, l, r) | ('pow', e, n)
    | ('if', 'a'|'b', remainder, then, else) (then-branch where var % 2 == remainder)."""

    text: str
    tree: tuple

    @property
    def uses_division(self) -> bool:
        return _any_node(self.tree, "/")

    def evaluate(self, a: torch.Tensor, b: torch.Tensor, p: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Values mod p and a validity mask (False where a divisor is 0 mod p). a, b: int64 [N]."""
        valid = torch.ones_like(a, dtype=torch.bool)
        values = _eval(self.tree, a, b, p, valid)
        return values % p, valid


def is_prime(n: int) -> bool:
    """Whether ``n`` is a prime (trial division; ``p`` is at most a few thousand)."""
    if n < 2:
        return False
    return all(n % d for d in range(2, math.isqrt(n) + 1))


def _any_node(tree: tuple, op: str) -> bool:
    if tree[0] == op:
        return True
    return any(isinstance(t, tuple) and _any_node(t, op) for t in tree[1:])


def _eval(node: tuple, a: torch.Tensor, b: torch.Tensor, p: int, valid: torch.Tensor) -> torch.Tensor:
    kind = node[0]
    if kind == "num":
        return torch.full_like(a, node[1] % p)
    if kind == "var":
        return (a if node[1] == "a" else b) % p
    if kind == "neg":
        return (-_eval(node[1], a, b, p, valid)) % p
    if kind == "if":
        take = ((a if node[1] == "a" else b) % p) % 2 == node[2]
        valid_then, valid_else = valid.clone(), valid.clone()
        then = _eval(node[3], a, b, p, valid_then)
        other = _eval(node[4], a, b, p, valid_else)
        valid &= torch.where(take, valid_then, valid_else)
        return torch.where(take, then, other)
    if kind == "pow":
        base = _eval(node[1], a, b, p, valid)
        out = torch.ones_like(base)
        for _ in range(node[2]):
            out = (out * base) % p
        return out
    left = _eval(node[1], a, b, p, valid)
    right = _eval(node[2], a, b, p, valid)
    if kind == "+":
        return (left + right) % p
    if kind == "-":
        return (left - right) % p
    if kind == "*":
        return (left * right) % p
    if kind == "/":
        valid &= right != 0
        return (left * _mod_inverse(right, p)) % p
    raise AssertionError(kind)


def _mod_inverse(x: torch.Tensor, p: int) -> torch.Tensor:
    """x^(p-2) mod p (Fermat; p is prime whenever a formula divides). 0 maps to 0 and is masked."""
    result = torch.ones_like(x)
    base = x % p
    e = p - 2
    while e:
        if e & 1:
            result = (result * base) % p
        base = (base * base) % p
        e >>= 1
    return result


def _tokenize(text: str) -> list[tuple[str, str, int]]:
    tokens = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise FormulaError(f"unexpected character {text[pos:].lstrip()[:1]!r} at position {pos + 1} in {text!r}")
        num, op, name = m.groups()
        assert m.lastindex is not None  # one of the three groups matched
        start = m.start(m.lastindex)
        if num is not None:
            tokens.append(("num", num, start))
        elif op is not None:
            tokens.append(("op", "**" if op == "^" else op, start))
        elif name in _KEYWORDS:
            tokens.append(("kw", name, start))
        else:
            if name not in _VARS:
                raise FormulaError(f"unknown name {name!r} in {text!r}; use a and b (or x and y)")
            tokens.append(("var", _VARS[name], start))
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0
        self.depth = 0

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take_op(self, *ops: str) -> str | None:
        tok = self.peek()
        if tok and tok[0] == "op" and tok[1] in ops:
            self.i += 1
            return tok[1]
        return None

    def error(self, what: str) -> FormulaError:
        tok = self.peek()
        where = f"at position {tok[2] + 1}" if tok else "at the end"
        return FormulaError(f"{what} {where} in {self.text!r}")

    def parse(self) -> tuple:
        if not self.tokens:
            raise FormulaError("the formula is empty; write one in a and b, for example a+b")
        tree = self.formula()
        tok = self.peek()
        if tok is not None:
            raise self.error(f"unexpected {tok[1]!r}")
        return tree

    def take_kw(self, word: str) -> bool:
        tok = self.peek()
        if tok and tok[0] == "kw" and tok[1] == word:
            self.i += 1
            return True
        return False

    def formula(self) -> tuple:
        node = self.expr()
        if not self.take_kw("if"):
            return node
        tok = self.peek()
        if tok is None or tok[0] != "var":
            raise self.error("expected a or b after 'if'")
        self.i += 1
        if not self.take_kw("is"):
            raise self.error("expected 'is' (the condition reads: a is odd, b is even, ...)")
        if self.take_kw("odd"):
            remainder = 1
        elif self.take_kw("even"):
            remainder = 0
        else:
            raise self.error("expected 'odd' or 'even'")
        if not self.take_kw("else"):
            raise self.error("expected 'else'")
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise FormulaError(f"the formula nests deeper than {MAX_DEPTH} levels")
        other = self.formula()
        self.depth -= 1
        return ("if", tok[1], remainder, node, other)

    def expr(self) -> tuple:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise FormulaError(f"the formula nests deeper than {MAX_DEPTH} levels")
        node = self.term()
        while (op := self.take_op("+", "-")) is not None:
            node = (op, node, self.term())
        self.depth -= 1
        return node

    def term(self) -> tuple:
        node = self.unary()
        while (op := self.take_op("*", "/")) is not None:
            node = (op, node, self.unary())
        return node

    def unary(self) -> tuple:
        if self.take_op("-"):
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise FormulaError(f"the formula nests deeper than {MAX_DEPTH} levels")
            node = ("neg", self.unary())
            self.depth -= 1
            return node
        if self.take_op("+"):
            return self.unary()
        return self.power()

    def power(self) -> tuple:
        node = self.atom()
        if self.take_op("**"):
            tok = self.peek()
            if tok is None or tok[0] != "num":
                raise self.error("an exponent must be a whole number")
            self.i += 1
            n = int(tok[1])
            if n > MAX_EXPONENT:
                raise FormulaError(f"exponent {n} is too large (at most {MAX_EXPONENT}) in {self.text!r}")
            node = ("pow", node, n)
        return node

    def atom(self) -> tuple:
        tok = self.peek()
        if tok is None:
            raise self.error("expected a number, a, b or '('")
        if tok[0] == "num":
            self.i += 1
            if len(tok[1]) > 18:
                raise FormulaError(f"number {tok[1][:20]}... is too long in {self.text!r}")
            return ("num", int(tok[1]))
        if tok[0] == "var":
            self.i += 1
            return ("var", tok[1])
        if self.take_op("("):
            node = self.expr()
            if not self.take_op(")"):
                raise self.error("expected ')'")
            return node
        raise self.error(f"unexpected {tok[1]!r}")


def parse_formula(text: str) -> Expr:
    """Parse a formula in a and b; raises :class:`FormulaError` with a one-line reason."""
    if not isinstance(text, str):
        raise FormulaError(f"the formula must be a string, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise FormulaError(f"the formula is longer than {MAX_LENGTH} characters")
    tree = _Parser(text).parse()
    return Expr(text=text, tree=tree)
