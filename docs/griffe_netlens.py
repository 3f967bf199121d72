"""Griffe extension (``mkdocs.yml``: mkdocstrings' ``extensions``): netlens's docstrings use
Sphinx roles (``:class:`FlatModel```, ``:func:`~netlens.metrics.saliency_map```), which
Markdown does not know, and ``Example:`` sections of doctest lines. At build time each role
becomes a cross-reference and each ``Example:`` an ``Examples:`` section (code):

- the name is resolved like Python would (the docstring's object, its parents, their module's
  imports, then an absolute path); a name that resolves to nothing in netlens is a broken
  reference and is logged as a warning, which ``mkdocs build --strict`` turns into a failure;
- a name that resolves becomes an *optional* autoref to its canonical path: a link where the
  site documents that object, plain code where it does not (private helpers, torch).

The docstrings in the repository are not changed.
"""

from __future__ import annotations

import builtins
import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|mod|func|data|meth|attr|obj|exc|const|type):`(~?)([\w.]+)(\(\))?`")
# netlens writes "Example:" (Google's admonition form); "Examples:" makes griffe parse the
# ``>>>`` lines as code instead of Markdown text.
_EXAMPLE = re.compile(r"^([ \t]*)Example:[ \t]*$", flags=re.MULTILINE)
_logger = griffe.get_logger("griffe_netlens")


def _lookup(collection: Any, path: str) -> Any | None:
    try:
        return collection[path]
    except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None


def _canonical(obj: Any) -> str | None:
    try:
        return obj.final_target.path if obj.is_alias else obj.path
    except (griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None  # an import from outside netlens (torch, numpy)


def resolve(obj: Any, name: str) -> tuple[str | None, bool]:
    """``(canonical path or None, known)`` of ``name`` as seen from ``obj``'s docstring.

    Known but without a path: a builtin, or an object outside netlens (``torch.Tensor``,
    ``nn.Module`` where ``nn`` is an import of the module).
    """
    collection = obj.modules_collection
    first, _, rest = name.partition(".")
    candidates = []
    scope = obj
    while scope is not None:  # the object itself, its parents, their modules
        candidates.append(f"{scope.path}.{name}")
        member = scope.members.get(first)
        if member is not None and member.is_alias:
            target = member.target_path + (f".{rest}" if rest else "")
            if not target.startswith("netlens"):
                return None, True
            candidates.append(target)
        scope = scope.parent
    candidates.append(name)
    for candidate in candidates:
        found = _lookup(collection, candidate)
        if found is not None:
            return _canonical(found), True
    if not rest:
        return None, hasattr(builtins, name)
    return None, first != "netlens"


class SphinxRoles(griffe.Extension):
    """Turns Sphinx roles in docstrings into (optional) mkdocstrings cross-references."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        self._walk(pkg, set())

    def _walk(self, obj: Any, seen: set[str]) -> None:
        if obj.path in seen:
            return
        seen.add(obj.path)
        if obj.docstring is not None:
            value = _ROLE.sub(lambda m: self._replace(obj, m), obj.docstring.value)
            obj.docstring.value = _EXAMPLE.sub(r"\1Examples:", value)
        for member in obj.members.values():
            if not member.is_alias:
                self._walk(member, seen)

    def _replace(self, obj: Any, match: re.Match) -> str:
        tilde, name, call = match.groups()
        shown = (name.rsplit(".", 1)[-1] if tilde else name) + (call or "")
        path, known = resolve(obj, name)
        if not known:
            where = f"{obj.relative_filepath}:{obj.docstring.lineno}"
            _logger.warning(f"{where}: broken reference {match.group(0)} in {obj.path}")
        if path is None:
            return f"`{shown}`"
        return f'<autoref identifier="{path}" optional><code>{shown}</code></autoref>'
