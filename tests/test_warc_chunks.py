"""Checkpoints inside a WARC file and one file split over several units: every page exactly once, killed or not.

The WARC files are built from the real pages in ../shared/realdata (``tests.bigwarc``): hundreds of pages, three
records each, one gzip member per record, as Common Crawl writes them.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.app.config import load_config
from pipeline.app.warc import UnitPlan, byte_range, plan_units, run_warc_pass
from pipeline.core.parts import MARKERS, STATS, done_parts
from pipeline.core.schema import document_id
from pipeline.engines.local import LocalEngine
from pipeline.sources.warc import PER_RECORD_GZIP, PLAIN, SINGLE_GZIP, ChunkEnd, read_warc, warc_layout
from tests.bigwarc import BuiltWarc, build_warc
from tests.samples import WARC_PASS_ONLY

pytestmark = pytest.mark.timeout(600)

REPO = Path(__file__).resolve().parents[1]
DUMP = "CC-MAIN-2024-22"
PAGES = 300
CHUNK = 60


def _mirror(root: Path, pages: int, seed: int) -> tuple[Path, BuiltWarc]:
    rel = f"crawl-data/{DUMP}/segments/1717000000000.{seed}/warc/CC-MAIN-test-{seed:05d}.warc.gz"
    built = build_warc(root / rel, pages, seed=seed, max_page_bytes=60_000)
    (root / "crawl-data" / DUMP / "warc.paths.gz").write_bytes(gzip.compress(f"{rel}\n".encode()))
    return root, built


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, BuiltWarc]:
    """A mirror holding one WARC of ``PAGES`` real pages (1 + 3 x PAGES records)."""
    return _mirror(tmp_path_factory.mktemp("bigmirror"), PAGES, seed=1)


def _ids(path: Path, **kwargs: object) -> tuple[list[str], Counter[str], list[int]]:
    """Document ids read from ``path`` (in order), the counters, and the offsets of the chunk ends."""
    counters: Counter[str] = Counter()
    ids: list[str] = []
    ends: list[int] = []
    for item in read_warc(path, dump=DUMP, warc_path="w", counters=counters, batch_size=64, **kwargs):
        if isinstance(item, ChunkEnd):
            ends.append(item.offset)
        else:
            ids += item.column("id").to_pylist()
    return ids, counters, ends


def _expected_ids(built: BuiltWarc) -> list[str]:
    return [document_id(r) for r in built.response_ids]


# ------------------------------------------------------------------ reading: ranges and chunks (no extraction)


def test_ranges_on_record_boundaries_hold_every_record_once(big: tuple[Path, BuiltWarc]) -> None:
    _, built = big
    assert warc_layout(built.path) == PER_RECORD_GZIP
    whole, counters, _ = _ids(built.path)
    assert whole == _expected_ids(built)
    assert counters["records"] == 1 + 3 * PAGES
    for pieces in (2, 3, 7):
        ids: list[str] = []
        records = 0
        for piece in range(pieces):
            counts: Counter[str] = Counter()
            start, end, _ = byte_range(built.path, UnitPlan(piece=piece, pieces=pieces), 0, counts)
            assert start is not None
            got, c, _ = _ids(built.path, start=start, end=end)
            ids += got
            records += c["records"]
            assert not counts  # nothing to count for a file that can be cut
        assert ids == whole, f"{pieces} ranges"
        assert records == 1 + 3 * PAGES


def test_chunks_count_exactly_and_resume_from_their_offsets(big: tuple[Path, BuiltWarc]) -> None:
    _, built = big
    whole, total, ends = _ids(built.path, chunk_size=CHUNK)
    assert len(ends) == PAGES // CHUNK
    for k, offset in enumerate(ends):
        rest, counters, _ = _ids(built.path, start=offset)
        assert rest == whole[(k + 1) * CHUNK :], f"resuming at chunk {k + 1}"
        assert counters["documents"] == PAGES - (k + 1) * CHUNK
    # the counters of the chunks add up to the whole file's
    counters_by_chunk = []
    counts: Counter[str] = Counter()
    for item in read_warc(built.path, dump=DUMP, warc_path="w", counters=counts, chunk_size=CHUNK):
        if isinstance(item, ChunkEnd):
            counters_by_chunk.append(Counter(counts))
            counts.clear()
    counters_by_chunk.append(counts)
    assert [c["documents"] for c in counters_by_chunk[:-1]] == [CHUNK] * len(ends)
    assert sum(counters_by_chunk, Counter()) == total


@pytest.mark.parametrize(("kind", "layout"), [("single", SINGLE_GZIP), ("plain", PLAIN)])
def test_files_that_cannot_be_cut_are_read_whole_by_their_first_range(tmp_path: Path, kind: str, layout: str) -> None:
    built = build_warc(
        tmp_path / f"{kind}.warc{'.gz' if kind == 'single' else ''}", 40, seed=3, single_member=kind == "single",
        compress=kind == "single", max_page_bytes=60_000,
    )  # fmt: skip
    assert warc_layout(built.path) == layout
    counts: Counter[str] = Counter()
    assert byte_range(built.path, UnitPlan(piece=1, pieces=3), 10, counts) == (None, None, None)
    start, end, chunk = byte_range(built.path, UnitPlan(piece=0, pieces=3), 10, counts)
    assert (start, end) == (0, None)
    assert counts["whole_file_unit"] == 1
    ids, _, ends = _ids(built.path, start=start, end=end, chunk_size=chunk)
    assert ids == _expected_ids(built)
    if layout == PLAIN:  # any record offset of a plain file can be read from: checkpoints still work
        assert chunk == 10 and len(ends) == 4
        assert _ids(built.path, start=ends[1])[0] == ids[20:]
    else:  # one gzip stream cannot be entered in the middle: no checkpoints
        assert chunk is None and not ends


# ------------------------------------------------------------------ the WARC pass: kill, rerun, split


def _command(mirror: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "pipeline.app.cli", "run", "--cc-base-url", f"{mirror}/", "--dump", DUMP,
        "--output", str(out), "--name", "chunked", "--no-progress", "--keep-rejected", "-v",
        "--checkpoint-every", str(CHUNK), "--config", str(out / "warc-only.yaml"), *extra,
    ]  # fmt: skip


def _warc_only_config(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    lines = ["dedup:\n  exact: false\n  minhash:\n    enabled: false\n", "tokenize: false\n", "report: false\n"]
    (out / "warc-only.yaml").write_text("".join(lines))
    assert set(WARC_PASS_ONLY) == {"dedup.exact", "dedup.minhash.enabled", "tokenize", "report"}


def _run_killed_after_chunks(cmd: list[str], markers: Path, chunks: int) -> None:
    """Start ``cmd`` in its own session and kill -9 all of it once ``chunks`` chunk markers exist."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 400
    while len([m for m in markers.glob("part-*.*.done")]) < chunks:
        if proc.poll() is not None:
            pytest.fail(f"the run ended (exit {proc.returncode}) before {chunks} checkpoints")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("no checkpoint was committed in time")
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _all_rows(run_dir: Path) -> tuple[list[str], dict[str, str]]:
    """Ids of every page the pass saw (kept and rejected), and the kept documents' texts by id."""
    ids: list[str] = []
    texts: dict[str, str] = {}
    for name in done_parts(run_dir):
        kept = pq.read_table(run_dir / "documents" / f"{name}.parquet", columns=["id", "text"])
        ids += kept.column("id").to_pylist()
        texts.update(zip(kept.column("id").to_pylist(), kept.column("text").to_pylist(), strict=True))
        ids += pq.read_table(run_dir / "rejected" / f"{name}.parquet", columns=["id"]).column("id").to_pylist()
    return ids, texts


def _committed_files(run_dir: Path) -> dict[Path, int]:
    """Files of the committed parts and chunks, with their modification times."""
    committed = set(done_parts(run_dir))
    return {
        p: p.stat().st_mtime_ns
        for p in sorted(run_dir.glob("*/part-*.*"))
        if p.name.removesuffix(".done").removesuffix(".json").removesuffix(".parquet") in committed
    }


def _records_read(run_dir: Path) -> int:
    return sum(json.loads(p.read_text())["source"].get("records", 0) for p in (run_dir / STATS).glob("*.json"))


@pytest.fixture(scope="module")
def resumed(big: tuple[Path, BuiltWarc], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, dict]:
    """The WARC pass killed after 2 checkpoints and rerun: (run folder, the rerun's log, the killed attempt's
    committed chunk files with their modification times)."""
    mirror, _ = big
    out = tmp_path_factory.mktemp("resumed")
    _warc_only_config(out)
    run_dir = out / "chunked"
    _run_killed_after_chunks(_command(mirror, out), run_dir / MARKERS, 2)
    survivors = _committed_files(run_dir)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    rerun = subprocess.run(_command(mirror, out), cwd=REPO, env=env, capture_output=True, text=True, timeout=500)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    return run_dir, rerun.stderr, survivors


def test_kill_after_a_checkpoint_then_rerun_reads_only_the_rest(
    big: tuple[Path, BuiltWarc], resumed: tuple[Path, str, dict]
) -> None:
    _, built = big
    run_dir, log, survivors = resumed
    ids, _ = _all_rows(run_dir)
    assert len(ids) == len(set(ids)), "a page is in the output twice"
    assert sorted(ids) == sorted(_expected_ids(built)), "a page is missing"
    chunks = [n for n in done_parts(run_dir) if "." in n]
    assert len(chunks) == PAGES // CHUNK and done_parts(run_dir)[-1] == "part-00000"
    # the killed attempt's committed chunks were kept as they were, and the rerun started after them
    assert len([p for p in survivors if p.parent.name == MARKERS]) >= 2
    assert all(p.stat().st_mtime_ns == mtime for p, mtime in survivors.items())
    resumed_after = len([p for p in survivors if p.parent.name == MARKERS])
    assert f"resuming after {resumed_after} committed chunks" in log
    assert _records_read(run_dir) == 1 + 3 * PAGES, "a record was read twice"
    assert not [p for p in run_dir.glob("*/.part-*")], "temporary files of the killed attempt remain"


def test_a_split_file_gives_the_same_documents_as_unsplit(
    big: tuple[Path, BuiltWarc], resumed: tuple[Path, str, dict], tmp_path: Path
) -> None:
    mirror, _ = big
    config = load_config(
        overrides={
            "source.cc_base_url": f"{mirror}/", "source.dump": DUMP, "output_dir": str(tmp_path), "name": "split",
            "keep_rejected": True, "source.split_warcs": 3, "source.checkpoint_every": 70,
        }
    )  # fmt: skip
    run_warc_pass(config, plan_units(config), LocalEngine(workers=2, progress=False))
    parts = done_parts(config.run_dir)
    assert {p.partition(".")[0] for p in parts} == {"part-00000-000", "part-00000-001", "part-00000-002"}
    split_ids, split_texts = _all_rows(config.run_dir)
    ids, texts = _all_rows(resumed[0])
    assert sorted(split_ids) == sorted(ids)
    assert split_texts == texts
    assert _records_read(config.run_dir) == 1 + 3 * PAGES

    # a rerun into the same folder cut differently is refused: the same pages would land in two parts
    for split in (1, 2):
        other = config.model_copy(update={"source": config.source.model_copy(update={"split_warcs": split})})
        with pytest.raises(ValueError, match="--split-warcs 3"):
            run_warc_pass(other, plan_units(other), LocalEngine(workers=1, progress=False))
    assert {p.partition(".")[0] for p in done_parts(config.run_dir)} == {"part-00000-000", "part-00000-001",
                                                                        "part-00000-002"}  # fmt: skip
    run_warc_pass(config, plan_units(config), LocalEngine(workers=1, progress=False))  # the same split: all done


def test_split_and_killed_on_spark_then_rerun_exactly_once(tmp_path: Path) -> None:
    mirror, built = _mirror(tmp_path / "mirror", 200, seed=2)
    _warc_only_config(tmp_path)
    run_dir = tmp_path / "chunked"
    cmd = _command(mirror, tmp_path, "--split-warcs", "2", "--engine", "spark", "--master", "local[2]")
    cmd[cmd.index("--checkpoint-every") + 1] = "40"
    _run_killed_after_chunks(cmd, run_dir / MARKERS, 2)
    survivors = _committed_files(run_dir)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=500)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    ids, _ = _all_rows(run_dir)
    assert len(ids) == len(set(ids)), "a page is in the output twice"
    assert sorted(ids) == sorted(_expected_ids(built)), "a page is missing"
    assert {n.partition(".")[0] for n in done_parts(run_dir)} == {"part-00000-000", "part-00000-001"}
    assert all(p.stat().st_mtime_ns == mtime for p, mtime in survivors.items()), "a committed chunk was redone"
    assert _records_read(run_dir) == 1 + 3 * 200, "a record was read twice"


# ------------------------------------------------------------------ resume bookkeeping (no extraction)


def _commit_chunk(run_dir: Path, name: str, **marker: object) -> None:
    from pipeline.core.parts import DOCUMENTS
    from pipeline.core.schema import DOCUMENT_SCHEMA

    (run_dir / DOCUMENTS).mkdir(parents=True, exist_ok=True)
    (run_dir / MARKERS).mkdir(parents=True, exist_ok=True)
    pq.write_table(DOCUMENT_SCHEMA.empty_table(), run_dir / DOCUMENTS / f"{name}.parquet")
    (run_dir / MARKERS / f"{name}.done").write_text(json.dumps({"rows": 0, **marker}))


def test_resume_follows_chunks_committed_after_the_plan_and_restarts_on_another_file(tmp_path: Path) -> None:
    from pipeline.app.warc import resume_point, unit_plans
    from pipeline.engines.base import WorkUnit

    same = {"size": 1000, "etag": '"a"'}
    for index, offset in enumerate((100, 200, 300)):
        _commit_chunk(tmp_path, f"part-00000.{index:05d}", next_offset=offset, file=same)
    # the driver planned after chunk 0; a retried attempt committed chunks 1 and 2 since: nothing is redone
    plan = UnitPlan(next_chunk=1, resume_offset=100, file=same)
    assert resume_point(tmp_path, "part-00000", plan, same) == (3, 300)
    assert resume_point(tmp_path, "part-00000", UnitPlan(), same) == (3, 300)
    # the same size with another ETag, or another size: another version of the file, read again from the start
    assert resume_point(tmp_path, "part-00000", plan, {"size": 1000, "etag": '"b"'}) == (0, None)
    assert done_parts(tmp_path) == [] and not list((tmp_path / "documents").glob("*.parquet"))

    # chunks after a missing one are no resumable prefix: removed, and the part resumes after the last good one
    for index in (0, 2, 3):
        _commit_chunk(tmp_path, f"part-00001.{index:05d}", next_offset=100 * (index + 1), file=same)
    plans = unit_plans([WorkUnit("part-00001", ("w",))], tmp_path)
    assert (plans["part-00001"].next_chunk, plans["part-00001"].resume_offset) == (1, 100)
    assert done_parts(tmp_path) == ["part-00001.00000"]


@pytest.mark.parametrize("first_record", [100, 200_000, 1_500_000])
def test_layout_of_files_with_a_large_first_record(tmp_path: Path, first_record: int) -> None:
    import zlib

    def record(n: int) -> bytes:
        return b"WARC/1.0\r\nWARC-Type: resource\r\nContent-Length: %d\r\n\r\n" % n + b"x" * n + b"\r\n\r\n"

    records = [record(first_record), record(100)]
    per_record = b""
    for data in records:
        member = zlib.compressobj(6, zlib.DEFLATED, 31)
        per_record += member.compress(data) + member.flush()
    whole = zlib.compressobj(6, zlib.DEFLATED, 31)
    (tmp_path / "per-record.warc.gz").write_bytes(per_record)
    (tmp_path / "single.warc.gz").write_bytes(whole.compress(b"".join(records)) + whole.flush())
    assert warc_layout(tmp_path / "per-record.warc.gz") == PER_RECORD_GZIP
    assert warc_layout(tmp_path / "single.warc.gz") == SINGLE_GZIP
