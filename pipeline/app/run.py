"""A run: every enabled pass of :data:`pipeline.app.passes.PASSES`, in order, holding the run folder's lock.

Also the two ways a run's source is decided, shared by the CLI and the flow: the embedded sample crawl
served on 127.0.0.1 (:func:`sample_source`), and the newest dump a source offers (:func:`with_newest_dump`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pipeline.app.config import RunConfig
from pipeline.app.passes import RunState, enabled_passes, merge_passes, start_run
from pipeline.core.lock import output_lock
from pipeline.core.stats import PartStats
from pipeline.core.storage import (
    Location,
    StoreFailed,
    check_writable,
    configure_storage,
    describe_storage_error,
    is_remote,
    is_store_error,
    location,
    scratch_dir,
)
from pipeline.demo import SAMPLE_DUMP
from pipeline.engines import Engine, make_engine
from pipeline.engines.base import PassResult, RunIncomplete
from pipeline.sources.config import COMMON_CRAWL_BASE_URL

log = logging.getLogger(__name__)

SAMPLE_CRAWL_DIR = "sample-crawl"
SAMPLE_VAL_SHARD_TOKENS = 8_192
"""A sample is small: a val shard this size leaves train shards besides it."""


@dataclass
class RunSummary:
    """Where a run's outputs are and what its passes counted."""

    run_dir: Location
    result: PassResult
    """The WARC pass's parts: done, skipped (done by an earlier attempt), failed."""
    stats: PartStats
    documents_dir: Location
    pass_stats: list[PartStats] = field(default_factory=list)
    tokens_dir: Location | None = None
    report_path: Location | None = None
    failed: dict[str, str] = field(default_factory=dict)
    """WARC files that failed (path -> error), tolerated by ``max_failed_parts``: the run completed without them."""
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, state: RunState) -> RunSummary:
        from pipeline.core.parts import total_stats

        pass_stats = [total_stats(d) for d in state.documents_dirs]  # read once: the funnel merges these
        return cls(
            run_dir=state.run_dir,
            result=state.warc_result or PassResult(),
            stats=merge_passes(pass_stats),
            documents_dir=state.documents_dir / "documents",
            pass_stats=pass_stats,
            tokens_dir=state.tokens_dir,
            report_path=state.report_path,
            failed=dict(state.failed),
            warnings=list(state.warnings),
        )


def run_pipeline(config: RunConfig, *, progress: bool = True, engine: Engine | None = None) -> RunSummary:
    """Run every enabled pass for ``config`` on its engine; each resumes whatever an earlier attempt finished.

    One run per run folder: a second one is refused (:class:`pipeline.core.lock.OutputLocked`) while this lives.
    A run folder on a store that cannot be written fails here, before any work, with
    :class:`pipeline.core.storage.StorageError`.
    """
    configure_storage(config.storage_options)
    check_writable(config.run_dir)
    with output_lock(config.run_dir, "run"):
        engine = engine or make_engine(config.engine, progress=progress)
        state = start_run(config)
        log.info("run %s: %d WARC files from %s on the %s engine", config.run_dir, len(state.warc_paths),
                 config.source.cc_base_url, engine.kind)  # fmt: skip
        try:
            for spec in enabled_passes(config):
                log.info("%s pass", spec.name)
                spec.run(config, engine, state)
            return RunSummary.of(state)
        except RunIncomplete:
            raise
        except Exception as e:  # the store went away under the run: say which, and that a rerun resumes
            if is_remote(config.run_dir) and is_store_error(e):
                raise StoreFailed(describe_storage_error(e, config.run_dir)) from e
            raise


@contextlib.contextmanager
def sample_source(config: RunConfig, *, newest_dump: bool = False) -> Iterator[RunConfig]:
    """``config`` reading the embedded sample crawl, built under ``<output>/sample-crawl`` and served on
    127.0.0.1 while the block runs; the run is named "sample" unless it has a name."""
    from pipeline.demo.mirror import serve_directory
    from pipeline.demo.samplecrawl import build_sample_crawl

    output = location(config.output_dir)
    root = (scratch_dir() if is_remote(output) else output) / SAMPLE_CRAWL_DIR
    crawl = build_sample_crawl(root)  # deterministic and under a second: always current with the package
    dump = newest_dump_at(str(root), config.source.timeout_s) if newest_dump else SAMPLE_DUMP
    with serve_directory(crawl.root) as base_url:
        log.info("serving the sample crawl (%d WARC files) at %s", len(crawl.warc_paths), base_url)
        source = config.source.model_copy(update={"cc_base_url": base_url, "dump": dump})
        tokenizer = config.tokenizer
        if tokenizer.val_shard_tokens is None:
            tokenizer = tokenizer.model_copy(update={"val_shard_tokens": SAMPLE_VAL_SHARD_TOKENS})
        yield config.model_copy(update={"source": source, "name": config.name or "sample", "tokenizer": tokenizer})


def with_newest_dump(config: RunConfig) -> RunConfig:
    """``config`` on the newest dump its source offers (Common Crawl's collinfo.json, or a mirror's newest folder)."""
    dump = newest_dump_at(config.source.cc_base_url, config.source.timeout_s, config.source.storage_options)
    return config.model_copy(update={"source": config.source.model_copy(update={"dump": dump})})


def newest_dump_at(base_url: str, timeout_s: float, storage_options: dict[str, Any] | None = None) -> str:
    from pipeline.sources.dumps import newest_dump

    dump = newest_dump(base_url, timeout_s=timeout_s, storage_options=storage_options)
    log.info("newest dump at %s: %s", base_url, dump)
    return dump


def sample_conflict(config: RunConfig, newest_dump: bool) -> str | None:
    """Why a sample run cannot honour ``config.source`` (it reads the embedded crawl instead), or None.

    A sample run replaces the source's base URL and dump; a changed value would otherwise be dropped
    without a word and the run would complete on the sample's dump.
    """
    source = config.source
    ignored = []
    if source.cc_base_url != COMMON_CRAWL_BASE_URL:
        ignored.append(f"source.cc_base_url {source.cc_base_url!r} (must stay {COMMON_CRAWL_BASE_URL!r})")
    if not newest_dump and source.dump != SAMPLE_DUMP:
        ignored.append(f"source.dump {source.dump!r} (must stay {SAMPLE_DUMP!r})")
    if not ignored:
        return None
    return (
        f"a sample run reads the embedded sample crawl ({SAMPLE_DUMP}, served on 127.0.0.1), so it cannot use "
        f"{' or '.join(ignored)}; set them back, or run without the sample to read that source"
    )
