"""``refinery stage NAME``: one stage on sample files, for tuning.

Inputs are WARC files (read into raw records) or Parquet document files, local or on a store (``s3://...``:
a WARC file is copied to local scratch to be read, Parquet is read in place); each input file becomes one
output part, so the output (a local folder or a store URL) has the same layout, stats and resume behaviour
as a full run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from filters.decontaminate import BenchmarkIndex, DecontaminateStage
from filters.quality_classifier import QualityClassifierStage
from pipeline.app.config import RunConfig
from pipeline.app.warc import build_stage, process_records, stage_names
from pipeline.core.lock import output_lock
from pipeline.core.parts import PartWriter, part_name
from pipeline.core.stage import Stage, run_chain
from pipeline.core.stats import PartStats
from pipeline.core.storage import (
    Location,
    StorageError,
    absolute,
    arrow_source,
    check_writable,
    configure_storage,
    describe_storage_error,
    is_remote,
    local_copy,
    location,
)
from pipeline.engines.base import PassResult, WorkUnit, write_progress

log = logging.getLogger(__name__)

WARC_SUFFIXES = (".warc", ".warc.gz", ".arc.gz")
NEEDS_HTML = {"prescreen", "extract"}
NEEDS_HTML_ONLY = {"url_filter"}


def is_warc(path: Location) -> bool:
    return path.name.endswith(WARC_SUFFIXES)


def is_input_file(name: str) -> bool:
    return name.endswith(WARC_SUFFIXES) or name.endswith(".parquet")


def expand_inputs(inputs: list[Location | str]) -> list[Location]:
    """Files given directly, plus the WARC and Parquet files inside given folders (prefixes on a store), sorted."""
    files: list[Location] = []
    for given in inputs:
        p = location(given)
        if is_remote(p):
            files.extend(_store_files(p))
        elif p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and is_input_file(f.name))
            if not found:
                raise FileNotFoundError(f"no .warc(.gz) or .parquet files under {p}")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"input not found: {p}")
    kinds = {is_warc(f) for f in files}
    if len(kinds) > 1:
        raise ValueError("inputs mix WARC and Parquet files; run them separately")
    return files


def _store_files(p: Location) -> list[Location]:
    """``p`` itself if it is an object, else the input files under the prefix ``p`` (one recursive listing)."""
    fs: fsspec.AbstractFileSystem = p.fs
    try:
        if fs.isfile(p.path):
            return [p]
        found = sorted(f for f in fs.find(p.path) if is_input_file(f.rsplit("/", 1)[-1]))
    except FileNotFoundError as e:
        described = describe_storage_error(e, p)
        if "bucket does not exist" in described:
            raise StorageError(described) from None
        raise FileNotFoundError(f"input not found: {p}") from None
    except OSError as e:
        raise StorageError(describe_storage_error(e, p)) from e
    if not found:
        raise FileNotFoundError(f"input not found: no .warc(.gz) or .parquet files at {p}")
    root = str(p).rstrip("/")
    base = p.path.rstrip("/")
    return [location(root + f[len(base) :]) for f in found]


def stage_chain(name: str, warc_input: bool) -> list[str]:
    """Stage names to run for ``name`` on this kind of input (WARC input gets extraction first if needed)."""
    if name not in stage_names():
        raise ValueError(f"unknown stage {name!r}; stages are: {', '.join(stage_names())}")
    if name in NEEDS_HTML and not warc_input:
        raise ValueError(f"stage {name!r} needs HTML: give it WARC files, not Parquet documents")
    if warc_input and name not in NEEDS_HTML | NEEDS_HTML_ONLY:
        log.info("input is WARC: running 'extract' before %r", name)
        return ["extract", name]
    return [name]


@dataclass
class StagePass:
    """One input file -> one part through the named stages; picklable for worker processes."""

    config: RunConfig
    stage_names: tuple[str, ...]
    limit: int | None = None
    benchmarks: BenchmarkIndex | None = None
    """The decontaminate stage's index, built once by :func:`run_stage`; it travels to the workers with this."""

    def __call__(self, unit: WorkUnit, out_dir: Location) -> None:
        (input_path,) = unit.inputs
        path = location(input_path)
        stages = [self.stage(n) for n in self.stage_names]
        stats = PartStats(part=unit.part, inputs=[input_path])
        start = time.perf_counter()
        with PartWriter(out_dir, unit.part, keep_rejected=self.config.keep_rejected) as writer:
            if is_warc(path):
                with local_copy(path) as local:  # the reader seeks: a store's file is read from a local copy
                    process_records(
                        local,
                        path.name,
                        stages,
                        writer,
                        stats,
                        dump=self.config.source.dump,
                        batch_size=self.config.engine.batch_size,
                        batch_bytes=self.config.engine.batch_bytes,
                        limit=self.limit,
                        on_batch=lambda n: write_progress(out_dir, unit.part, n),
                    )
            else:
                seen = 0
                source, filesystem = arrow_source(path)
                parquet = pq.ParquetFile(source, filesystem=filesystem)
                for batch in parquet.iter_batches(batch_size=self.config.engine.batch_size):
                    if self.limit is not None and seen >= self.limit:
                        break
                    table = pa.Table.from_batches([batch])
                    if self.limit is not None:
                        table = table.slice(0, self.limit - seen)
                    seen += table.num_rows
                    kept, rejected = run_chain(stages, table, stats)
                    writer.write(kept, rejected)
                    write_progress(out_dir, unit.part, seen)
            stats.seconds = time.perf_counter() - start
            writer.commit(stats)

    def stage(self, name: str) -> Stage:
        if name == "decontaminate" and self.benchmarks is not None:
            return DecontaminateStage(self.config.decontaminate, self.benchmarks)
        return build_stage(name, self.config)


def run_stage(
    name: str,
    inputs: list[Location | str],
    output: Location | str,
    config: RunConfig,
    *,
    limit: int | None = None,
    progress: bool = True,
) -> PassResult:
    """Run stage ``name`` on ``inputs`` into ``output`` (documents/, stats/, markers/, rejected/) on its engine.

    Inputs and output are local paths or store URLs; a store output that cannot be written fails before any work.
    """
    from pipeline.engines import make_engine

    configure_storage(config.storage_options)
    files = expand_inputs(inputs)
    names = stage_chain(name, warc_input=is_warc(files[0]))
    units = [WorkUnit(part=part_name(i), inputs=(_unit_input(f),)) for i, f in enumerate(files)]
    output = location(output)
    check_writable(output)
    if "quality_classifier" in names:  # loaded once here: a bad model fails now; forked workers share it
        QualityClassifierStage(config.quality_classifier).prepare()
    benchmarks = None
    if "decontaminate" in names:  # the index, built once here: a missing file or field fails now
        stage = build_stage("decontaminate", config)
        assert isinstance(stage, DecontaminateStage)
        benchmarks = stage.index
    engine = make_engine(config.engine, progress=progress)
    with output_lock(output, f"stage {name}"):
        processor = StagePass(config, tuple(names), limit, benchmarks)
        return engine.run_units(units, processor, output, description=f"stage {name}")


def _unit_input(f: Location) -> str:
    """How a unit names its input: an absolute path (workers run elsewhere), or the store URL."""
    return str(absolute(f))
