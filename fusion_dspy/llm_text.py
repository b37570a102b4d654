"""Rendering task fields and candidates as prompt text (shared by the fusor and the rater)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def render_fields(values: Mapping[str, Any], names: Sequence[str] | None = None) -> str:
    """A single field as itself; several as ``name: value`` lines."""
    names = list(names or values.keys())
    if len(names) == 1:
        return str(values.get(names[0], ""))
    return "\n".join(f"{n}: {values.get(n, '')}" for n in names)


def fence(text: str, tag: str, attrs: str = "") -> str:
    """Enclose ``text`` in ``<tag>`` markers, neutralising any such markers inside it (prompt-injection guard)."""
    safe = str(text).replace(f"<{tag}", f"&lt;{tag}").replace(f"</{tag}", f"&lt;/{tag}")
    open_tag = f"<{tag} {attrs}>" if attrs else f"<{tag}>"
    return f"{open_tag}\n{safe}\n</{tag}>"
