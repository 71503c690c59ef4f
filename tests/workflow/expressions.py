"""GitHub Actions expressions (`${{ … }}` and `if:`), as much of the language as a workflow
uses: contexts with property access, literals, `! == != && || ( )`, and the status functions
plus contains/startsWith/endsWith. Values follow GitHub's loose rules: a missing property is
null, null prints as '', comparisons coerce to strings (case-insensitive, like GitHub's)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>-?\d+(?:\.\d+)?)|(?P<op>&&|\|\||==|!=|<=|>=|[!()<>,])"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_\-]*(?:\.[A-Za-z0-9_\-*]+|\[[^\]]+\])*))"
)
TEMPLATE = re.compile(r"\$\{\{(.*?)\}\}", re.S)


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        match = TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise ValueError(f"cannot read expression at {text[pos:]!r}")
        kind = match.lastgroup or ""
        out.append((kind, match.group(kind)))
        pos = match.end()
    return out


def render(value: Any) -> str:
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


def truthy(value: Any) -> bool:
    return value not in (None, "", False, 0)


class Evaluator:
    def __init__(self, contexts: dict[str, Any], status: Callable[[str], bool]) -> None:
        self.contexts = contexts
        self.status = status  # success() / failure() / always() / cancelled()

    def evaluate(self, text: str) -> Any:
        self.toks = _tokens(text)
        self.pos = 0
        value = self._or()
        if self.pos != len(self.toks):
            raise ValueError(f"unexpected {self.toks[self.pos][1]!r} in {text!r}")
        return value

    def condition(self, text: str | bool | None) -> bool:
        if text is None:
            return self.status("success")
        if isinstance(text, bool):
            return text
        inner = text.strip()
        match = TEMPLATE.fullmatch(inner)
        if match:
            inner = match.group(1)
        uses_status = re.search(r"\b(success|failure|always|cancelled)\(\)", inner)
        value = truthy(self.evaluate(inner))
        # Like GitHub: a condition without a status function is `success() && (…)`.
        return value if uses_status else value and self.status("success")

    def substitute(self, text: str) -> str:
        return TEMPLATE.sub(lambda m: render(self.evaluate(m.group(1))), text)

    # --- recursive descent -----------------------------------------------------------------

    def _peek(self) -> str:
        return self.toks[self.pos][1] if self.pos < len(self.toks) else ""

    def _take(self) -> tuple[str, str]:
        tok = self.toks[self.pos]
        self.pos += 1
        return tok

    def _or(self) -> Any:
        left = self._and()
        while self._peek() == "||":
            self._take()
            right = self._and()
            left = left if truthy(left) else right
        return left

    def _and(self) -> Any:
        left = self._compare()
        while self._peek() == "&&":
            self._take()
            right = self._compare()
            left = right if truthy(left) else left
        return left

    def _compare(self) -> Any:
        left = self._unary()
        while self._peek() in ("==", "!=", "<", ">", "<=", ">="):
            op = self._take()[1]
            right = self._unary()
            a, b = render(left).lower(), render(right).lower()
            left = {"==": a == b, "!=": a != b, "<": a < b, ">": a > b, "<=": a <= b,
                    ">=": a >= b}[op]  # fmt: skip
        return left

    def _unary(self) -> Any:
        if self._peek() == "!":
            self._take()
            return not truthy(self._unary())
        return self._primary()

    def _primary(self) -> Any:
        kind, text = self._take()
        if text == "(":
            value = self._or()
            self._take()  # ")"
            return value
        if kind == "str":
            return text[1:-1].replace("''", "'")
        if kind == "num":
            return float(text) if "." in text else int(text)
        if text in ("true", "false"):
            return text == "true"
        if text == "null":
            return None
        if self._peek() == "(":
            self._take()
            args = []
            while self._peek() != ")":
                args.append(self._or())
                if self._peek() == ",":
                    self._take()
            self._take()
            return self._call(text, args)
        return self._lookup(text)

    def _call(self, name: str, args: list[Any]) -> Any:
        if name in ("success", "failure", "always", "cancelled"):
            return self.status(name)
        a, b = (render(x).lower() for x in [*args, "", ""][:2])
        if name == "contains":
            return b in a
        if name == "startsWith":
            return a.startswith(b)
        if name == "endsWith":
            return a.endswith(b)
        raise ValueError(f"function {name}() is not emulated")

    def _lookup(self, path: str) -> Any:
        parts = re.findall(r"[^.\[\]]+", path)
        value: Any = self.contexts
        for part in parts:
            part = part.strip("'\"")
            if isinstance(value, dict):
                value = value.get(part)
            else:
                return None
        return value
