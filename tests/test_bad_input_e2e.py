"""A flaky or broken mirror fails only the affected part, with a clear reason, and a rerun completes it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.app.run import run_pipeline
from pipeline.core.parts import done_parts, read_documents
from pipeline.engines.base import RunIncomplete
from tests.http_faults import Cut, Fail, FaultServer, Serve
from tests.samples import sample_config


def _config(base_url: str, out: Path, keep_warcs: bool = False):  # noqa: ANN202
    return sample_config(base_url, out, "flaky", {"source.retries": 2, "source.keep_warcs": keep_warcs})


def _rows(run_dir: Path) -> list[tuple[str, str]]:
    table = read_documents(run_dir, columns=["id", "text"])
    return sorted(zip(table.column("id").to_pylist(), table.column("text").to_pylist(), strict=True))


@pytest.mark.parametrize("keep_warcs", [True, False], ids=["downloaded", "streamed"])
def test_http_errors_fail_one_part_and_rerun_completes(
    tmp_path: Path,
    sample_crawl,
    sample_run,
    keep_warcs: bool,  # noqa: ANN001
) -> None:
    first, second, third = sample_crawl.warc_paths[:3]
    with FaultServer(sample_crawl.root) as server:
        server.script(first, Fail(500), Fail(503))  # transient: retried, then served
        # connection reset mid-body: a download resumes with Range; a streamed read asks for the block again
        server.script(second, Cut(after=20_000)) if keep_warcs else server.script(second, Serve(), Cut(after=20_000))
        server.script(third, then=Fail(404))  # permanent: this part fails, the others finish
        config = _config(server.url, tmp_path, keep_warcs)
        with pytest.raises(RunIncomplete) as err:
            run_pipeline(config, progress=False)
        message = str(err.value)
        assert "1 of 4 parts failed" in message and "404" in message and "part-00002" in message
        assert done_parts(config.run_dir) == ["part-00000", "part-00001", "part-00003"]
        ranges = [r.range for r in server.requests_for(second)]
        if keep_warcs:
            assert any(r and r.startswith("bytes=20000-") for r in ranges)
        else:
            assert ranges[1] == ranges[2] and ranges[1].startswith("bytes=0-"), ranges

        server.script(third, then=Serve())  # the mirror recovers
        summary = run_pipeline(config, progress=False)
    assert len(summary.result.skipped) == 3 and summary.result.done == ["part-00002"]
    assert not (config.run_dir / "failures" / "part-00002.json").exists()
    assert _rows(config.run_dir) == _rows(sample_run.run_dir)


def test_missing_dump_is_a_clear_error(tmp_path: Path, mirror_url: str) -> None:
    config = _config(mirror_url, tmp_path)
    config.source.dump = "CC-MAIN-1999-01"
    with pytest.raises(Exception, match="CC-MAIN-1999-01") as err:
        run_pipeline(config, progress=False)
    assert "404" in str(err.value) or "not found" in str(err.value).lower()
