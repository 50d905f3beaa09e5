"""What the installed `opentelemetry-semantic-conventions` package says, read from the package itself, for the
tests that hold our spans and metrics to it (`test_instr_semconv.py`, `test_instr_metrics.py`). Not a test file.

The package defines each attribute as a module-level constant followed by its docstring; a deprecated one says
"Deprecated: Replaced by `new.name`" there (attributes that only moved to the GenAI conventions' own repository
say "Moved to", and are current).
"""

from __future__ import annotations

import ast
import inspect
import re
from enum import Enum
from types import ModuleType

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes, openai_attributes
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics
from opentelemetry.semconv.attributes import error_attributes, server_attributes

ATTRIBUTE_MODULES = (gen_ai_attributes, openai_attributes, server_attributes, error_attributes)

_REPLACED_BY = re.compile(r"Replaced by `([^`]+)`")


def constants(module: ModuleType) -> dict[str, str]:
    """name -> its docstring, for every string constant the module defines."""
    tree = ast.parse(inspect.getsource(module))
    out: dict[str, str] = {}
    body = tree.body
    for node, following in zip(body, body[1:] + [None]):
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        value = getattr(node, "value", None)
        if isinstance(target, ast.Name) and isinstance(value, ast.Constant) and isinstance(value.value, str):
            doc = following.value.value if (isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                                            and isinstance(following.value.value, str)) else ""
            out[value.value] = doc
    return out


def attribute_names() -> dict[str, str | None]:
    """Every attribute name the package defines in `ATTRIBUTE_MODULES`: name -> the name replacing it, or None."""
    names: dict[str, str | None] = {}
    for module in ATTRIBUTE_MODULES:
        for name, doc in constants(module).items():
            found = _REPLACED_BY.search(doc)
            names[name] = found.group(1) if found and "Deprecated" in doc else None
    return names


def enum_values(attribute: str) -> set[str] | None:
    """The values the package's enum for `attribute` allows (None if the attribute has no enum)."""
    for module in ATTRIBUTE_MODULES:
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, Enum) and value is not Enum:
                class_name = "".join(part.capitalize() for part in re.split(r"[._]", attribute)) + "Values"
                if value.__name__ == class_name:
                    return {member.value for member in value}
    return None


def metric_helpers() -> dict[str, object]:
    """metric name -> the package's `create_gen_ai_client_*` helper that makes it."""
    helpers = {}
    for name, function in vars(gen_ai_metrics).items():
        if name.startswith("create_gen_ai_client_") and callable(function):
            constant = name[len("create_"):].upper()
            helpers[getattr(gen_ai_metrics, constant)] = function
    return helpers
