"""Named tuples built by keyword in the source, in field order at run time.

A `NamedTuple` built by keyword names every value, so a field added or moved cannot shift the others; but the
interpreter matches each keyword against the fields at every call, which for a row of `llm_spans` made once per
span costs more than building the rest of the row. `by_keyword(Record)` recompiles a function once, at import:
each `Record(field=value, ...)` in its source becomes `tuple.__new__(Record, (value, ...))` with the values in
field order, after checking that it names every field exactly once (a `TypeError` at import otherwise). The
function as written stays as `__wrapped__`: the plain reference, which tests compare with the recompiled one.
"""

from __future__ import annotations

import __future__
import ast
import inspect
import textwrap
import types
from typing import Any, Callable


class _Positional(ast.NodeTransformer):
    def __init__(self, record: type, name: str) -> None:
        self.record, self.name, self.rewritten = record, name, 0

    def visit_Call(self, node: ast.Call) -> Any:
        self.generic_visit(node)
        if not (isinstance(node.func, ast.Name) and node.func.id == self.record.__name__):
            return node
        given = {k.arg: k.value for k in node.keywords}
        if node.args or None in given or len(given) != len(node.keywords) or set(given) != set(self.record._fields):
            missing = sorted(set(self.record._fields) - set(given))
            extra = sorted(set(given) - set(self.record._fields))
            raise TypeError(f"{self.name}, line {node.lineno}: build {self.record.__name__} by keyword, each field "
                            f"once (missing {missing}, unknown {extra})")
        self.rewritten += 1
        values = ast.Tuple([given[f] for f in self.record._fields], ast.Load())
        new = ast.Attribute(ast.Name("tuple", ast.Load()), "__new__", ast.Load())
        return ast.copy_location(ast.Call(new, [node.func, values], []), node)


def by_keyword(record: type) -> Callable[[Callable], Callable]:
    """A decorator: the function recompiled with its keyword constructions of `record` made positional."""

    def recompile(function: Callable) -> Callable:
        if function.__code__.co_freevars:
            raise TypeError(f"{function.__qualname__}: only a module's own functions can be recompiled")
        try:
            source = textwrap.dedent(inspect.getsource(function))
        except (OSError, TypeError):
            return function  # (no source to read: the function as written, correct and slower)
        tree = ast.parse(source)
        definition = tree.body[0]
        assert isinstance(definition, ast.FunctionDef)
        definition.decorator_list = []
        ast.increment_lineno(tree, function.__code__.co_firstlineno - 1)
        transformer = _Positional(record, function.__qualname__)
        transformer.visit(tree)
        if not transformer.rewritten:
            raise TypeError(f"{function.__qualname__} builds no {record.__name__}")
        ast.fix_missing_locations(tree)
        module = compile(tree, function.__code__.co_filename, "exec", dont_inherit=True,
                         flags=__future__.annotations.compiler_flag)
        [code] = [c for c in module.co_consts if isinstance(c, types.CodeType) and c.co_name == function.__name__]
        fast = types.FunctionType(code, function.__globals__, function.__name__, function.__defaults__,
                                  function.__closure__)
        fast.__kwdefaults__ = function.__kwdefaults__
        fast.__doc__, fast.__qualname__, fast.__module__ = function.__doc__, function.__qualname__, function.__module__
        fast.__annotations__ = function.__annotations__
        fast.__wrapped__ = function  # type: ignore[attr-defined]
        return fast

    return recompile
