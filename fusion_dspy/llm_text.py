"""Rendering task fields and candidates as prompt text (shared by the fusor and the rater)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any


def render_fields(values: Mapping[str, Any], names: Sequence[str] | None = None) -> str:
    """A single field as itself; several as ``name: value`` lines."""
    names = list(names or values.keys())
    if len(names) == 1:
        return str(values.get(names[0], ""))
    return "\n".join(f"{n}: {values.get(n, '')}" for n in names)


#: the tags fusion-dspy fences data with (candidates, rated and judged responses, prompts, drafts)
FENCE_TAGS = ("candidate", "response", "prompt", "draft")
# What a model may read as one of our tags: "<" or a look-alike, spaces (zero-width too) anywhere,
# an optional slash, the tag name in any case. Neutralised inside fenced text, so the text cannot
# close its fence (or open another) whatever the spelling: </Candidate>, </CANDIDATE >, < /candidate>.
_GAP = r"[\s\u200b-\u200d\u2060\ufeff]*"
_TAG_LIKE = re.compile(rf"[<\uff1c\ufe64\u2039\u3008\u27e8]{_GAP}(/?){_GAP}(?=(?:{'|'.join(FENCE_TAGS)})s?\b)", re.I)
# DSPy's field markers ("[[ ## answer ## ]]"): inside data they would start a field of their own.
_FIELD_MARKER = re.compile(r"\[\[\s*##\s*(\w+)\s*##\s*\]\]")


def neutralise(text: str) -> str:
    """``text`` with every fence tag (any spelling) and DSPy field marker defused, the rest unchanged."""
    safe = _TAG_LIKE.sub(lambda m: "&lt;" + m.group(1), str(text))
    return _FIELD_MARKER.sub(lambda m: f"[# {m.group(1)} #]", safe)


def fence(text: str, tag: str, attrs: str = "") -> str:
    """Enclose ``text`` in ``<tag>`` markers as data (prompt-injection guard).

    Inside it, anything a model could read as one of our fence tags, in any case or spacing, and
    DSPy's field markers are neutralised (:func:`neutralise`), so a candidate can neither end its
    fence early nor plant an ``[[ ## answer ## ]]`` of its own.
    """
    if tag not in FENCE_TAGS:
        raise ValueError(f"fence tag must be one of {FENCE_TAGS}, got {tag!r}")
    open_tag = f"<{tag} {attrs}>" if attrs else f"<{tag}>"
    return f"{open_tag}\n{neutralise(text)}\n</{tag}>"
