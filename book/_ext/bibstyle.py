"""Bibliography labels that match the in-text citations.

With ``bibtex_reference_style: author_year`` the text cites "Goodfellow et al., 2014", while
pybtex's default labels in the bibliography read "[GPAM+14]". This registers a formatting style
``authoryear`` (pybtex's ``plain`` with author-year labels, "Goodfellow et al., 2014", and
author-year sorting) and ``_config.yml`` selects it with ``bibtex_default_style``.
"""
from __future__ import annotations

import string
from collections import Counter

from pybtex.plugin import register_plugin
from pybtex.richtext import Text
from pybtex.style.formatting.plain import Style as PlainStyle
from pybtex.style.labels import BaseLabelStyle


def _plain(latex: str) -> str:
    return Text.from_latex(latex).render_as("text")


def _names(entry) -> str:
    persons = entry.persons.get("author") or entry.persons.get("editor") or []
    last = [_plain(" ".join(p.prelast_names + p.last_names)) for p in persons]
    if not last:
        return entry.key
    if len(last) == 1:
        return last[0]
    if len(last) == 2:
        return f"{last[0]} and {last[1]}"
    return f"{last[0]} et al."


class AuthorYearLabelStyle(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        entries = list(sorted_entries)
        base = [f"{_names(e)}, {e.fields.get('year', 'n.d.')}" for e in entries]
        counts, seen = Counter(base), Counter()
        for label in base:
            if counts[label] > 1:  # "Kingma and Welling, 2014a", "..., 2014b"
                suffix = string.ascii_lowercase[seen[label]]
                seen[label] += 1
                label += suffix
            yield label


class AuthorYearStyle(PlainStyle):
    default_label_style = "authoryear"
    default_sorting_style = "author_year_title"


def setup(app):
    register_plugin("pybtex.style.labels", "authoryear", AuthorYearLabelStyle)
    register_plugin("pybtex.style.formatting", "authoryear", AuthorYearStyle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
