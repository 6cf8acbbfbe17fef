"""Language pre-screen: skip pages that are clearly not in a wanted language before paying for extraction.

trafilatura costs tens of milliseconds a page; on a Common Crawl dump more than half the HTML pages are in
languages a run does not want, and the language stage drops them only after extraction. This stage reads a
cheap approximation of the main text first and scores it with the same lid.176 model (and loader) the language
stage uses. The approximation is the page's prose: the lines of at least :data:`PROSE_LINE_CHARS` characters of
resiliparse's plain text of the whole page (one line per block element), which leaves out the short lines of
navigation, menus and footers where an English template's boilerplate sits. It is about three times cheaper
than resiliparse's main-content heuristics and finds more of the foreign pages built on English templates
(BENCHMARKS.md, issue 16). When a page has too little prose, its whole text is scored instead.

It is meant to be conservative: a page is skipped only when its pre-screen text is long enough to judge
(``langid.prescreen_min_chars``) and every wanted language scores below ``langid.prescreen_threshold`` (and
below the language stage's own ``langid.threshold``, should that be set lower). Anything in doubt (little
text, a parse error, a page above the extraction's size limit, which the extraction stage drops and counts
itself) is handed on. The drop rule is ``langid`` (counted as ``prescreen:langid``). Off when
``langid.prescreen`` is false or ``langid.languages`` is empty (every language is kept, nothing to skip).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
from resiliparse.extract.html2text import extract_plain_text
from resiliparse.parse.html import HTMLTree

from pipeline.core.stage import with_drop_reasons
from pipeline.stages.config import LangIdConfig
from pipeline.stages.langid import LABEL_PREFIX, _as_lines, _predict_lines, load_lid_model

log = logging.getLogger(__name__)

PRESCREEN_RULE = "langid"
"""The drop rule: ``prescreen:langid`` in the stats and the report."""

MAX_TEXT_CHARS = 3_000
"""Characters of the pre-screen text that are scored: fastText's cost is linear in them, and lid.176's scores
barely move past a few thousand characters (on the language mix, 3,000 skip the same pages as the whole text
bar one, and hand on every page the full chain keeps)."""

PROSE_LINE_CHARS = 120
"""A line of the page's text this long is prose, not a menu entry, a link or a caption."""

_TEXT_OPTIONS: dict[str, bool] = {
    "preserve_formatting": True,
    "main_content": False,
    "list_bullets": False,
    "alt_texts": False,
    "links": False,
    "form_fields": False,
    "noscript": False,
    "comments": False,
}
"""The whole page, one line per block element, no link targets, alt texts or form fields."""


def prescreen_text(html: str, min_chars: int = 1) -> str:
    """The prose of one page (its lines of :data:`PROSE_LINE_CHARS` characters or more, joined), the first
    :data:`MAX_TEXT_CHARS` characters; the whole page's text when the prose has fewer than ``min_chars``."""
    text = extract_plain_text(HTMLTree.parse(html), **_TEXT_OPTIONS)
    prose = " ".join(line for line in text.split("\n") if len(line) >= PROSE_LINE_CHARS)
    return (prose if len(prose) >= min_chars else text)[:MAX_TEXT_CHARS]


def prescreen_enabled(config: LangIdConfig) -> bool:
    """Whether the pre-screen can skip anything: it is switched on and the run keeps only some languages."""
    return bool(config.prescreen and config.languages)


@dataclass
class PrescreenStage:
    """Drops (rule ``langid``) the pages whose prose is clearly in none of the wanted languages.

    Input is a ``RAW_SCHEMA`` batch (``html`` column, the page as the WARC reader decoded it, the same ``str``
    the extraction stage gets); the output is the same batch with ``drop_reason``. ``max_html_bytes`` is the
    extraction's size limit: larger pages are left for the extraction stage to drop and count.
    """

    config: LangIdConfig = field(default_factory=LangIdConfig)
    max_html_bytes: int | None = None
    name: str = field(default="prescreen", init=False)

    def __call__(self, table: pa.Table) -> pa.Table:
        if "html" not in table.column_names:
            raise ValueError(f"stage {self.name!r} needs the 'html' column of WARC records; got {table.column_names}")
        n = table.num_rows
        if not prescreen_enabled(self.config):
            return with_drop_reasons(table, pa.nulls(n, pa.string()))
        html = table.column("html")
        sizes = pc.binary_length(html).to_pylist()
        rows: list[int] = []
        texts: list[str] = []
        for i, (size, page) in enumerate(zip(sizes, html.to_pylist(), strict=True)):
            if not size or (self.max_html_bytes is not None and size > self.max_html_bytes):
                continue
            try:
                text = prescreen_text(page, self.config.prescreen_min_chars)
            except Exception as err:  # lexbor refuses a page: the extraction stage decides about it
                log.debug("pre-screen could not parse row %d: %r", i, err)
                continue
            if len(text) >= self.config.prescreen_min_chars:
                rows.append(i)
                texts.append(text)
        reasons: list[str | None] = [None] * n
        if texts:
            model = load_lid_model(self.config.model_path)
            labels, probs = _predict_lines(model, _as_lines(texts), -1)
            wanted = {LABEL_PREFIX + code for code in self.config.languages or ()}
            threshold = min(self.config.prescreen_threshold, self.config.threshold)
            for i, labs, ps in zip(rows, labels, probs, strict=True):
                if _foreign(labs, ps, wanted, threshold):
                    reasons[i] = PRESCREEN_RULE
        return with_drop_reasons(table, reasons)


def _foreign(labels: list[str], probs: object, wanted: set[str], threshold: float) -> bool:
    """No wanted label scores ``threshold`` or more (labels come best first, every label is listed)."""
    for label, p in zip(labels, probs, strict=True):  # type: ignore[call-overload]
        if float(p) < threshold:
            return True
        if label in wanted:
            return False
    return True
