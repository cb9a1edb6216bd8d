"""The environment variables the service reads, as ``credctl serve --help`` lists them (from service/config.py)."""

from __future__ import annotations

import ast
import inspect
import re
from functools import cache

from service import config


@cache
def _docstrings() -> dict[str, str]:
    """Each variable's attribute docstring in service/config.py, first sentence, keyed by the variable's name.

    Read from the source: attribute docstrings exist only there, and config.py is where each setting is
    documented once.
    """
    tree = ast.parse(inspect.getsource(config))
    found: dict[str, str] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        for field, after in zip(node.body, node.body[1:], strict=False):
            if not (isinstance(field, ast.AnnAssign) and isinstance(field.target, ast.Name)):
                continue
            if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
                found[f"{node.name}.{field.target.id}"] = " ".join(str(after.value.value).split())
    return found


def _first_sentence(text: str) -> str:
    return re.split(r"(?<=\.)\s+(?=[A-Z])", text, maxsplit=1)[0]


def environment_help() -> str:
    """An epilog for click: one line per variable, ``NAME (or NAME_FILE)  what it is``."""
    docs = _docstrings()
    lines = ["\b", "Environment (see the README's Configuration section):"]
    for section in _sections(config.Settings):
        for name, env in config._envs(section).items():
            if env is None:
                continue
            doc = _first_sentence(docs.get(f"{section.__name__}.{name}", ""))
            shown = env.name + (f" (or {env.name}_FILE)" if env.file else "")
            lines.append(f"  {shown:<44} {doc}".rstrip())
    return "\n".join(lines)


def _sections(section: type[config.Section]) -> list[type[config.Section]]:
    nested = [config._section_type(section, n) for n, env in config._envs(section).items() if env is None]
    return [section, *(inner for child in nested for inner in _sections(child))]
