"""A Common-Crawl-like language mix of HTML pages, built from real material into a folder of WARC files.

- The real WARC samples (``warc_samples``), unchanged: real pages of real sites, mostly English, some Chinese,
  Russian, Dutch, Aragonese...
- Pages in other languages made from real ones: real English pages with at least three paragraphs (the
  extraction benchmarks' pages and the WARC samples' HTML responses, ``tests.bigwarc.real_pages``) are the
  templates; the content of every ``<p>``, ``<h1>`` and ``<title>`` is replaced by one to three real sentences of
  one language of the lingua test set (``langid_lingua``), so the main-text area is in that language while the
  markup, navigation and other boilerplate stay those of the real page. Languages are drawn by
  ``tests.bigwarc.MIX_LANGUAGE_WEIGHTS`` (roughly Common Crawl's largest languages in their order, a long tail of
  every other lingua language). Written as one WARC file, one gzip member per record, as Common Crawl's.

Enough made pages are added that English is ``english_share`` (45%) of the HTML pages our reader hands on. A
real page's language is lid.176's top label on its resiliparse main-content text (the whole page's text when the
main content is empty). Deterministic for a seed; nothing of it is checked in.
"""

from __future__ import annotations

import logging
import random
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("bench.langmix")

ENGLISH_SHARE = 0.45
TEMPLATE_MIN_ENGLISH = 0.9
"""lid.176 English score a template's paragraph text needs."""


@dataclass
class LanguageMix:
    folder: Path
    real_files: list[Path]
    made_file: Path
    real: Counter[str] = field(default_factory=Counter)
    """HTML pages of the real WARC files per language."""
    made: Counter[str] = field(default_factory=Counter)
    """Made pages per language."""
    templates: int = 0

    @property
    def pages(self) -> int:
        return sum(self.real.values()) + sum(self.made.values())

    def share(self, code: str) -> float:
        return (self.real[code] + self.made[code]) / self.pages if self.pages else 0.0

    def describe(self, top: int = 12) -> list[str]:
        """Markdown: how the mix was built and its language shares."""
        total = self.real + self.made
        rows = [
            f"| {code} | {self.real[code]} | {self.made[code]} | {100 * n / self.pages:.1f}% |"
            for code, n in total.most_common(top)
        ]
        rest = total.most_common()[top:]
        if rest:
            n_real, n_made = sum(self.real[c] for c, _ in rest), sum(self.made[c] for c, _ in rest)
            rows.append(
                f"| {len(rest)} other languages | {n_real} | {n_made} | {100 * (n_real + n_made) / self.pages:.1f}% |"
            )
        return [
            f"Language mix ({self.pages} HTML pages, {len(total)} languages): the {len(self.real_files)} complete "
            f"real WARC files ({sum(self.real.values())} HTML pages) plus one WARC file of "
            f"{sum(self.made.values())} pages made from {self.templates} real English page templates with the main "
            "text replaced by real sentences of another language (see `bench/langmix.py`). English "
            f"{100 * self.share('en'):.1f}% of the pages.",
            "",
            "| language (lid.176 for real pages) | real pages | made pages | share |",
            "|---|---:|---:|---:|",
            *rows,
            "",
        ]


def page_language(html: str) -> str:
    """lid.176's top label on the page's main-content text (whole text if that is empty); ``none`` if no text.

    resiliparse's main-content heuristics, not the pre-screen's own text, so the mix does not move with it.
    """
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    from pipeline.stages.langid import predict_languages

    tree = HTMLTree.parse(html)
    flat = ("preserve_formatting", "list_bullets", "alt_texts", "links", "form_fields", "noscript", "comments")
    options = dict.fromkeys(flat, False)
    text = extract_plain_text(tree, main_content=True, **options)
    text = text[:5_000].strip() or extract_plain_text(tree).strip()
    if not text:
        return "none"
    return next(iter(predict_languages([text], k=1)[0]), "none")


def real_languages(files: list[Path]) -> Counter[str]:
    """Language of every HTML page our reader hands on from ``files``."""
    from pipeline.sources.warc import read_warc

    found: Counter[str] = Counter()
    for path in files:
        for batch in read_warc(path, dump="mix", warc_path=path.name, counters=Counter(), batch_size=500):
            found.update(page_language(h or "") for h in batch.column("html").to_pylist())
    return found


def build_language_mix(
    out: Path, real_files: list[Path], english_share: float = ENGLISH_SHARE, seed: int = 0
) -> LanguageMix:
    """Copy ``real_files`` into ``out`` and add a WARC file of made pages until English is ``english_share``."""
    from pipeline.stages.langid import predict_languages
    from tests.bigwarc import build_pages_warc, lingua_sentences, localize, mix_languages, mix_templates, real_pages

    out.mkdir(parents=True, exist_ok=True)
    copies = []
    for path in real_files:
        shutil.copyfile(path, out / path.name)
        copies.append(out / path.name)
    real = real_languages(copies)
    n_made = max(0, round(real["en"] / english_share) - sum(real.values()))

    def is_english(text: str) -> bool:
        return predict_languages([text], k=1)[0].get("en", 0.0) >= TEMPLATE_MIN_ENGLISH

    templates = mix_templates(real_pages(), is_english)
    rng = random.Random(seed)
    order = list(range(len(templates)))
    rng.shuffle(order)
    languages = mix_languages(n_made, seed)
    sentences = {code: lingua_sentences(code) for code in set(languages)}
    pages = [localize(templates[order[i % len(order)]], sentences[code], rng) for i, code in enumerate(languages)]
    made_file = out / "langmix-made-00000.warc.gz"
    build_pages_warc(made_file, pages, seed=seed)
    mix = LanguageMix(out, copies, made_file, real, Counter(languages), len(templates))
    log.info("language mix: %d pages, English %.1f%%, in %s", mix.pages, 100 * mix.share("en"), out)
    return mix
