"""A strict subset of Go's text/template, enough to parse and render the alert annotations and the notification
templates the way Grafana does: what it does not know (a function, a syntax) is an error, never a guess.

Follows the Go documentation of text/template (https://pkg.go.dev/text/template): actions `{{ }}` with the
trim markers `{{- ` and ` -}}`; `if`/`else if`/`else`, `with`/`else`, `range`, `define`, `template`, `end`;
pipelines with `|`; parenthesised arguments; variables (`$`, `$name` with field chains); the built-in
functions and, or, not, len, index, printf, urlquery, eq, ne, lt, le, gt, ge (comparisons refuse a float
against an integer, as Go's do: "incompatible types for comparison"). Truth is Go's: false, 0, "", nil and
empty collections are false. Extra functions (Grafana's, e.g. externalURL) are passed in.
"""

from __future__ import annotations

import re
from typing import Any, Callable
from urllib.parse import quote_plus


class TemplateError(Exception):
    pass


TOKEN_RE = re.compile(r"""\s*(?:
    (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
  | (?P<var>\$\w*(?:\.\w+)*)
  | (?P<field>(?:\.\w+)+|\.)
  | (?P<ident>[A-Za-z_]\w*)
  | (?P<punct>:=|\(|\)|\||=)
)""", re.X)


def tokenize(text: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    text = text.strip()
    while pos < len(text):
        match = TOKEN_RE.match(text, pos)
        if not match or match.end() == pos:
            raise TemplateError(f"cannot read {text[pos:]!r}")
        kind = match.lastgroup
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    return tokens


class Node:
    pass


class Text(Node):
    def __init__(self, text: str) -> None:
        self.text = text


class Action(Node):
    def __init__(self, tokens) -> None:
        self.tokens = tokens


class Block(Node):
    def __init__(self, kind: str, tokens) -> None:
        self.kind, self.tokens, self.body, self.other = kind, tokens, [], []


class Include(Node):
    def __init__(self, name: str, tokens) -> None:
        self.name, self.tokens = name, tokens


KEYWORDS = {"if", "with", "range", "else", "end", "define", "template", "block"}


def split(source: str) -> list[tuple[str, Any]]:
    """Text and actions, with the trim markers applied."""
    parts: list[tuple[str, Any]] = []
    pos = 0
    while True:
        start = source.find("{{", pos)
        if start < 0:
            parts.append(("text", source[pos:]))
            return parts
        end = source.find("}}", start)
        if end < 0:
            raise TemplateError("unclosed action")
        inner = source[start + 2:end]
        text = source[pos:start]
        if inner.startswith("- ") or inner.startswith("-\n"):
            text = text.rstrip()
            inner = inner[1:]
        trim_after = inner.endswith(" -") or inner.endswith("\n-")
        if trim_after:
            inner = inner[:-1]
        parts.append(("text", text))
        if not inner.strip().startswith("/*"):
            parts.append(("action", inner))
        pos = end + 2
        if trim_after:
            while pos < len(source) and source[pos] in " \t\r\n":
                pos += 1


def parse(source: str) -> tuple[list[Node], dict[str, list[Node]]]:
    """The main tree and the `define`d templates."""
    defines: dict[str, list[Node]] = {}
    root: list[Node] = []
    stack: list[tuple[Block | None, list[Node]]] = [(None, root)]
    for kind, value in split(source):
        current = stack[-1][1]
        if kind == "text":
            if value:
                current.append(Text(value))
            continue
        tokens = tokenize(value)
        if not tokens:
            raise TemplateError("empty action")
        head = tokens[0][1] if tokens[0][0] == "ident" else None
        if head in ("if", "with", "range"):
            block = Block(head, tokens[1:])
            current.append(block)
            stack.append((block, block.body))
        elif head == "define":
            if len(tokens) != 2 or tokens[1][0] != "string" or len(stack) != 1:
                raise TemplateError("define takes one name, at the top level")
            block = Block("define", [])
            defines[_string(tokens[1][1])] = block.body
            stack.append((block, block.body))
        elif head == "template":
            if tokens[1][0] != "string":
                raise TemplateError("template needs a quoted name")
            current.append(Include(_string(tokens[1][1]), tokens[2:]))
        elif head == "else":
            block, _ = stack[-1]
            if block is None or block.kind not in ("if", "with", "range"):
                raise TemplateError("else outside if/with/range")
            if len(tokens) > 1:
                if tokens[1][1] not in ("if", "with") or tokens[1][0] != "ident":
                    raise TemplateError(f"else {tokens[1][1]}")
                nested = Block(tokens[1][1], tokens[2:])
                nested.chained = True
                block.other.append(nested)
                stack.append((nested, nested.body))
            else:
                stack[-1] = (block, block.other)
        elif head == "end":
            if len(tokens) != 1 or len(stack) == 1:
                raise TemplateError("unexpected end")
            while getattr(stack[-1][0], "chained", False):
                stack.pop()
            stack.pop()
        elif head in KEYWORDS:
            raise TemplateError(f"{head} is not modelled")
        else:
            current.append(Action(tokens))
    if len(stack) != 1:
        raise TemplateError("missing end")
    return root, defines


def _string(literal: str) -> str:
    if literal.startswith("`"):
        return literal[1:-1]
    return bytes(literal[1:-1], "utf-8").decode("unicode_escape")


def truth(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, (bool, int, float, str, list, tuple, dict)):
        return bool(value)
    return True


def _compare(name: str, a: Any, b: Any) -> bool:
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool):
        if isinstance(a, float) != isinstance(b, float):
            raise TemplateError(f"{name}: incompatible types for comparison")
    elif type(a) is not type(b):
        raise TemplateError(f"{name}: incompatible types for comparison")
    return {"eq": a == b, "ne": a != b, "lt": a < b, "le": a <= b, "gt": a > b, "ge": a >= b}[name]


def go_printf(fmt: str, *args: Any) -> str:
    out, i, n = [], 0, 0
    for match in re.finditer(r"%(%|[-+ 0#]*\d*(?:\.\d+)?[a-zA-Z])", fmt):
        out.append(fmt[i:match.start()])
        i = match.end()
        verb = match.group(1)
        if verb == "%":
            out.append("%")
            continue
        if n >= len(args):
            raise TemplateError("printf: missing argument")
        arg = args[n]
        n += 1
        if verb[-1] in "fgeE":
            if not isinstance(arg, (int, float)) or isinstance(arg, bool):
                raise TemplateError(f"printf %{verb} of {type(arg).__name__}")
            out.append(("%" + verb) % arg)
        elif verb[-1] in "sv":
            out.append(str(arg))
        elif verb[-1] == "d":
            out.append(("%" + verb) % arg)
        else:
            raise TemplateError(f"printf verb %{verb} is not modelled")
    out.append(fmt[i:])
    if n != len(args):
        raise TemplateError("printf: extra arguments")
    return "".join(out)


BUILTINS: dict[str, Callable[..., Any]] = {
    "printf": go_printf,
    "len": lambda x: len(x),
    "not": lambda x: not truth(x),
    "urlquery": lambda *xs: quote_plus("".join(str(x) for x in xs)),
    **{name: (lambda name: lambda a, b: _compare(name, a, b))(name) for name in ("eq", "ne", "lt", "le", "gt", "ge")},
}


def _index(container: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(container, dict):
            container = container.get(key, "")
        elif isinstance(container, (list, tuple)):
            container = container[key]
        else:
            raise TemplateError("index of a non-collection")
    return container


class Renderer:
    def __init__(self, source: str, functions: dict[str, Callable[..., Any]] | None = None,
                 defines: dict[str, list[Node]] | None = None) -> None:
        self.root, own = parse(source)
        self.defines = {**(defines or {}), **own}
        self.functions = {**BUILTINS, "index": _index, **(functions or {})}

    def render(self, dot: Any, variables: dict[str, Any] | None = None, name: str | None = None) -> str:
        nodes = self.defines[name] if name else self.root
        return self._nodes(nodes, dot, {"$": dot, **(variables or {})})

    def _nodes(self, nodes: list[Node], dot: Any, variables: dict[str, Any]) -> str:
        out = []
        for node in nodes:
            if isinstance(node, Text):
                out.append(node.text)
            elif isinstance(node, Action):
                value = self._pipeline(node.tokens, dot, variables)
                if value is not _ASSIGNED:
                    out.append(_print(value))
            elif isinstance(node, Include):
                if node.name not in self.defines:
                    raise TemplateError(f"no template {node.name}")
                arg = self._pipeline(node.tokens, dot, variables) if node.tokens else None
                out.append(self._nodes(self.defines[node.name], arg, {"$": arg}))
            elif isinstance(node, Block):
                value = self._pipeline(node.tokens, dot, variables)
                if node.kind == "range":
                    if truth(value):
                        out.extend(self._nodes(node.body, item, variables) for item in value)
                    else:
                        out.append(self._nodes(node.other, dot, variables))
                elif truth(value):
                    out.append(self._nodes(node.body, value if node.kind == "with" else dot, variables))
                else:
                    out.append(self._nodes(node.other, dot, variables))
        return "".join(out)

    def _pipeline(self, tokens, dot, variables):
        if len(tokens) >= 2 and tokens[0][0] == "var" and tokens[1] == ("punct", ":="):
            variables[tokens[0][1]] = self._pipeline(tokens[2:], dot, variables)
            return _ASSIGNED
        commands, current, depth = [], [], 0
        for token in tokens:
            if token == ("punct", "|") and depth == 0:
                commands.append(current)
                current = []
                continue
            depth += token == ("punct", "(")
            depth -= token == ("punct", ")")
            current.append(token)
        commands.append(current)
        value, piped = None, False
        for command in commands:
            value = self._command(command, dot, variables, [value] if piped else [])
            piped = True
        return value

    def _command(self, tokens, dot, variables, extra):
        args = self._operands(tokens, dot, variables)
        head = tokens[0]
        if head[0] == "ident" and head[1] not in ("true", "false", "nil"):
            name = head[1]
            if name in ("and", "or"):
                values = args[1:] + extra
                for value in values[:-1]:
                    if truth(value) == (name == "or"):
                        return value
                return values[-1]
            if name not in self.functions:
                raise TemplateError(f'function "{name}" not defined')
            return self.functions[name](*args[1:], *extra)
        if len(args) != 1 or extra:
            raise TemplateError("a value cannot take arguments")
        return args[0]

    def _operands(self, tokens, dot, variables) -> list[Any]:
        out, i = [], 0
        while i < len(tokens):
            kind, text = tokens[i]
            if text == "(" and kind == "punct":
                depth, j = 1, i + 1
                while depth:
                    depth += tokens[j] == ("punct", "(")
                    depth -= tokens[j] == ("punct", ")")
                    j += 1
                out.append(self._pipeline(tokens[i + 1:j - 1], dot, variables))
                i = j
                continue
            if kind == "string" or kind == "raw":
                out.append(_string(text))
            elif kind == "number":
                out.append(float(text) if re.search(r"[.eE]", text) else int(text))
            elif kind == "var":
                name, *fields = text.split(".")
                if name not in variables:
                    raise TemplateError(f"undefined variable {name}")
                out.append(_fields(variables[name], fields))
            elif kind == "field":
                out.append(dot if text == "." else _fields(dot, text.split(".")[1:]))
            elif kind == "ident":
                if text in ("true", "false"):
                    out.append(text == "true")
                elif text == "nil":
                    out.append(None)
                elif i == 0:
                    out.append(text)  # the function name
                elif text in self.functions:
                    out.append(self.functions[text]())  # a niladic function as an argument
                else:
                    raise TemplateError(f'function "{text}" not defined')
            else:
                raise TemplateError(f"unexpected {text!r}")
            i += 1
        return out


_ASSIGNED = object()


def _fields(value: Any, fields: list[str]) -> Any:
    for name in fields:
        if isinstance(value, dict):
            value = value.get(name)  # a map's missing key is its zero value
        elif value is None:
            raise TemplateError(f"nil pointer evaluating .{name}")
        elif hasattr(value, name):
            value = getattr(value, name)
        else:
            raise TemplateError(f"can't evaluate field {name}")
    return value


def _print(value: Any) -> str:
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if value != int(value) else f"{value:g}"
    return str(value)
