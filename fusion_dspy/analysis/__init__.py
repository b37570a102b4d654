"""Where fused text comes from: character attribution to sources, position bias, Best-of-N shares.

- :mod:`~fusion_dspy.analysis.attribution`: the paper's character attribution (appendix F);
- :mod:`~fusion_dspy.analysis.views`: what is read from one record (either kind, any format version);
- :mod:`~fusion_dspy.analysis.shares`: contribution, position and Best-of-N shares over a file;
- :mod:`~fusion_dspy.analysis.html_view`: one record as an HTML page;
- :mod:`~fusion_dspy.analysis.report`: the report files (table, charts, example, summary).
"""

from fusion_dspy.analysis.attribution import (
    MATCHER_BACKEND,
    MULTIPLE,
    RESERVED_LABELS,
    UNMATCHED,
    BlockFinder,
    attribute,
    char_counts,
    contributions,
    label_runs,
    matching_blocks,
    stdlib_matching_blocks,
)
from fusion_dspy.analysis.html_view import LABEL_COLOURS, colours_for, render_html
from fusion_dspy.analysis.report import OUTPUT_FILES, write_report
from fusion_dspy.analysis.shares import (
    Aggregate,
    Analysis,
    aggregate_contributions,
    analyze_records,
    position_shares,
    selection_shares,
)
from fusion_dspy.analysis.views import RecordView, iter_views, record_view

__all__ = [
    "LABEL_COLOURS",
    "MATCHER_BACKEND",
    "MULTIPLE",
    "OUTPUT_FILES",
    "RESERVED_LABELS",
    "UNMATCHED",
    "Aggregate",
    "Analysis",
    "BlockFinder",
    "RecordView",
    "aggregate_contributions",
    "analyze_records",
    "attribute",
    "char_counts",
    "colours_for",
    "contributions",
    "iter_views",
    "label_runs",
    "matching_blocks",
    "position_shares",
    "record_view",
    "render_html",
    "selection_shares",
    "stdlib_matching_blocks",
    "write_report",
]
