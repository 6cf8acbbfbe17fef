"""A WARC file truncated at the source commits its part with the records before the cut; a non-gzip one fails it."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest

from pipeline.app.config import SAMPLE_DUMP, RunConfig
from pipeline.app.run import run_pipeline
from pipeline.core.parts import done_parts, load_stats, read_documents
from pipeline.engines.base import RunIncomplete
from pipeline.sources.warc import read_warc
from tests.http_faults import FaultServer
from tests.samples import WARC_PASS_ONLY, sample_config


def _config(base_url: str, out: Path) -> RunConfig:
    # downloaded whole into the cache: what this file checks (the streamed read: tests/test_warc_stream.py)
    return sample_config(base_url, out, "truncated", {"source.retries": 2, "source.keep_warcs": True, **WARC_PASS_ONLY})


def _reader_counts(data: bytes, tmp: Path, warc_path: str) -> Counter[str]:
    path = tmp / "probe.warc.gz"
    path.write_bytes(data)
    counters: Counter[str] = Counter()
    for _ in read_warc(path, dump=SAMPLE_DUMP, warc_path=warc_path, counters=counters):
        pass
    return counters


def _gets(server: FaultServer, rel: str) -> int:
    return sum(r.method == "GET" for r in server.requests_for(rel))


def test_source_truncated_warc_commits_its_salvaged_records(tmp_path: Path, sample_crawl) -> None:  # noqa: ANN001
    first = sample_crawl.warc_paths[0]
    data = (sample_crawl.root / first).read_bytes()
    cut = len(data) * 2 // 3
    with FaultServer(sample_crawl.root) as server:
        server.script(first, clip=cut)  # every request gets the same first 2/3, Content-Length agrees
        config = _config(server.url, tmp_path)
        run_pipeline(config, progress=False)  # no RunIncomplete: the part commits
        assert _gets(server, first) == 1  # all bytes arrived: not fetched again

    assert done_parts(config.run_dir) == ["part-00000", "part-00001", "part-00002", "part-00003"]
    stats = {s.part: s for s in load_stats(config.run_dir)}["part-00000"]
    salvaged = _reader_counts(data[:cut], tmp_path, first)
    full = _reader_counts(data, tmp_path, first)
    assert stats.source["truncated_file"] == 1
    assert stats.source["documents"] == salvaged["documents"]
    assert 0 < salvaged["documents"] < full["documents"]
    kept = read_documents(config.run_dir, columns=["warc_path"]).column("warc_path").to_pylist()
    assert 0 < kept.count(first) <= salvaged["documents"]
    sidecar = Path(config.output_dir) / "warc-cache" / (first + ".complete")
    assert '"truncated_at_source": true' in sidecar.read_text()


def test_non_gzip_warc_fails_its_part_with_a_clear_message(tmp_path: Path, sample_crawl) -> None:  # noqa: ANN001
    mirror = tmp_path / "mirror"
    shutil.copytree(sample_crawl.root, mirror)
    second = sample_crawl.warc_paths[1]
    (mirror / second).write_bytes(b"<html><body>503 Service Unavailable</body></html>\n")
    with FaultServer(mirror) as server:
        config = _config(server.url, tmp_path / "out")
        with pytest.raises(RunIncomplete, match="did not return a gzip file") as err:
            run_pipeline(config, progress=False)
        assert _gets(server, second) == 1  # refetching an HTML page will not make it a WARC file
    assert "part-00001" in str(err.value)
    assert done_parts(config.run_dir) == ["part-00000", "part-00002", "part-00003"]
