"""Run configurations of the embedded sample crawl, as the tests build them (one place for the shared keys)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.app.config import RunConfig

WARC_PASS_ONLY: dict[str, Any] = {
    "dedup.exact": False,
    "dedup.minhash.enabled": False,
    "tokenize": False,
    "report": False,
}
"""Overrides that leave only the WARC pass of a run (no dedup, tokens or report)."""


def realdata_config(realdata: Path, out: Path, name: str, overrides: dict[str, Any] | None = None) -> RunConfig:
    """A run named ``name`` reading the real WARC samples by file name (units built by the test), every language
    kept and rejected rows written; ``overrides`` on top."""
    from pipeline.app.config import load_config

    base = {
        "source.cc_base_url": str(realdata / "warc_samples"),
        "output_dir": str(out),
        "name": name,
        "keep_rejected": True,
        "langid.languages": None,
    }
    return load_config(overrides={**base, **(overrides or {})})


def real_warc_mirror(realdata: Path, root: Path, dump: str = "CC-MAIN-2024-22") -> Path:
    """The real WARC samples (``realdata/warc_samples``) as a local mirror in Common Crawl's layout: a listing
    and one segment, so ``refinery run --cc-base-url ROOT --dump DUMP`` reads them as a dump."""
    import gzip
    import shutil

    folder = root / "crawl-data" / dump / "segments" / "1" / "warc"
    folder.mkdir(parents=True)
    names = []
    for path in sorted((realdata / "warc_samples").glob("*.warc.gz")):
        shutil.copy(path, folder / path.name)
        names.append(f"crawl-data/{dump}/segments/1/warc/{path.name}")
    (root / "crawl-data" / dump / "warc.paths.gz").write_bytes(gzip.compress("\n".join(names).encode()))
    return root


ABLATION_LOOSE: dict[str, Any] = {"quality.filters": [], "dedup.exact": False, "dedup.minhash.enabled": False}
"""Run B of the ablation tests and benchmark: the quality filters and dedup off (junk and duplicates kept)."""


def ablation_runs(realdata: Path, base: Path) -> dict[str, Path]:
    """Runs ``a`` (the default chain) and ``b`` (:data:`ABLATION_LOOSE`) of the real WARC samples, tokenized with
    GPT-2 (an 8,192-token val shard), 2 workers, no report."""
    from pipeline.app.config import load_config
    from pipeline.app.run import run_pipeline

    crawl = real_warc_mirror(realdata, base / "crawl")
    common = {
        "source.cc_base_url": str(crawl),
        "source.dump": "CC-MAIN-2024-22",
        "output_dir": str(base / "out"),
        "report": False,
        "tokenizer.val_shard_tokens": 8192,
        "engine.workers": 2,
    }
    runs = {}
    for name, extra in (("a", {}), ("b", ABLATION_LOOSE)):
        config = load_config(overrides={**common, **extra, "name": name})
        runs[name] = Path(run_pipeline(config, progress=False).run_dir)
    return runs


def sample_config(base_url: str, out: Path, name: str, overrides: dict[str, Any] | None = None) -> RunConfig:
    """A run named ``name`` of the sample crawl's dump read from ``base_url``, written under ``out``."""
    from pipeline.app.config import SAMPLE_DUMP, load_config

    base = {"source.cc_base_url": base_url, "source.dump": SAMPLE_DUMP, "output_dir": str(out), "name": name}
    return load_config(overrides={**base, **(overrides or {})})
