"""One record as a standalone HTML page: the fused text coloured by where each character came from."""

from __future__ import annotations

import html
from collections.abc import Iterable

from fusion_dspy.analysis.attribution import MULTIPLE, UNMATCHED, label_runs
from fusion_dspy.analysis.views import RecordView

_PALETTE = (
    "#8dd3c7",
    "#ffffb3",
    "#bebada",
    "#fb8072",
    "#80b1d3",
    "#fdb462",
    "#b3de69",
    "#fccde5",
    "#bc80bd",
    "#ccebc5",
)
LABEL_COLOURS = {MULTIPLE: "#d9d9d9", UNMATCHED: "#ffffff"}


def colours_for(names: Iterable[str]) -> dict[str, str]:
    """A stable colour per source name (cycling a qualitative palette), plus the reserved labels."""
    out = {name: _PALETTE[i % len(_PALETTE)] for i, name in enumerate(names)}
    out.update(LABEL_COLOURS)
    return out


def render_html(view: RecordView, *, title: str = "Where the fused answer comes from") -> str:
    """A standalone HTML page: the fused text coloured by source, a legend with shares, the sources."""
    if view.fused is None:
        raise ValueError(f"record {view.id} has no analysed fusion ({view.skip})")
    runs = label_runs(view.fused, view.sources)
    n = len(view.fused)
    counts: dict[str, int] = dict.fromkeys([*view.sources, MULTIPLE, UNMATCHED], 0)
    for lo, hi, label in runs:
        counts[label] += hi - lo
    names = sorted(view.sources, key=lambda s: (view.positions.get(s, 10**9), s))
    colours = colours_for(names)
    esc = html.escape
    spans = "".join(
        f'<span class="{_css(label)}" title="{esc(label)}">{esc(view.fused[lo:hi])}</span>' for lo, hi, label in runs
    )
    legend = "".join(
        f'<li><span class="swatch {_css(label)}"></span>{esc(label)}'
        + (f" (shown {view.positions[label]})" if label in view.positions else "")
        + f": {counts[label] / n:.1%}</li>"
        for label in [*names, MULTIPLE, UNMATCHED]
    )
    styles = "".join(f".{_css(label)}{{background:{colour}}}" for label, colour in colours.items())
    details = "".join(
        f'<details><summary><span class="swatch {_css(name)}"></span>{esc(name)}</summary>'
        f"<pre>{esc(view.sources[name])}</pre></details>"
        for name in names
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;line-height:1.5}}
.fused,pre{{white-space:pre-wrap;word-wrap:break-word;border:1px solid #ccc;padding:1rem;font-family:inherit}}
.swatch{{display:inline-block;width:1em;height:1em;border:1px solid #999;margin-right:.4em;vertical-align:middle}}
ul.legend{{list-style:none;padding:0}}
{styles}
</style></head><body>
<h1>{esc(title)}</h1>
<p>Record <code>{esc(view.id)}</code>, field <code>{esc(view.field)}</code>, {n} characters. Each character is
coloured by the source whose longest matching block (difflib) covers it; equal longest blocks from
several sources are <em>multiple</em>, characters no block covers are <em>unmatched</em>.</p>
<ul class="legend">{legend}</ul>
<div class="fused">{spans}</div>
<h2>Sources</h2>
{details}
</body></html>
"""


def _css(label: str) -> str:
    """A CSS class name for any label (names are arbitrary text)."""
    return "l" + "".join(c if c.isalnum() else f"_{ord(c):x}_" for c in label)
