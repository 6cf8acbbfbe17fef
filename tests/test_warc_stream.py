"""Remote WARC files read by byte ranges while they are processed (``keep_warcs`` off): same documents as a local
read, no local copy, faults retried per block, each range of a split file fetching about its own bytes."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

import pipeline.sources.stream as stream
from pipeline.app.config import load_config
from pipeline.app.warc import plan_units, run_warc_pass
from pipeline.core.parts import done_parts, read_documents
from pipeline.engines.base import RunIncomplete
from pipeline.engines.local import LocalEngine
from pipeline.sources.download import DownloadError, NotGzipError
from pipeline.sources.stream import RemoteWarc
from tests.bigwarc import BuiltWarc, build_warc
from tests.http_faults import Cut, Fail, FaultServer, Serve, Stall

DUMP = "CC-MAIN-2024-22"
BLOCK = 256 << 10


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, BuiltWarc]:
    root = tmp_path_factory.mktemp("streammirror")
    rel = f"crawl-data/{DUMP}/segments/1717000000000.9/warc/CC-MAIN-stream-00000.warc.gz"
    built = build_warc(root / rel, 120, seed=4, max_page_bytes=60_000)
    (root / "crawl-data" / DUMP / "warc.paths.gz").write_bytes(gzip.compress(f"{rel}\n".encode()))
    return root, rel, built


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream, "BLOCK_BYTES", BLOCK)  # several blocks per file, so faults land mid-file


def _config(base_url: str, out: Path, name: str, **overrides: object):  # noqa: ANN202 - RunConfig
    return load_config(
        overrides={
            "source.cc_base_url": base_url, "source.dump": DUMP, "output_dir": str(out), "name": name,
            "source.keep_warcs": False, "source.download_dir": str(out / "cache"), "source.retries": 3,
            "source.checkpoint_every": 50, **overrides,
        }
    )  # fmt: skip


def _rows(run_dir: Path) -> list[tuple[str, str]]:
    table = read_documents(run_dir, columns=["id", "text"])
    return sorted(zip(table.column("id").to_pylist(), table.column("text").to_pylist(), strict=True))


def _bytes_asked(server: FaultServer, rel: str) -> int:
    total = 0
    for request in server.requests_for("/" + rel):
        if request.range:
            first, _, last = request.range.removeprefix("bytes=").partition("-")
            total += int(last) - int(first) + 1
    return total


def test_streamed_pass_equals_a_local_read_survives_faults_and_keeps_no_copy(
    mirror: tuple[Path, str, BuiltWarc], tmp_path: Path
) -> None:
    root, rel, built = mirror
    local = _config(f"{root}/", tmp_path, "local")
    run_warc_pass(local, plan_units(local), LocalEngine(workers=1, progress=False))
    with FaultServer(root) as server:
        # the size request, then a block: 503, a reset mid-body, a stall past the timeout; then all is well
        server.script("/" + rel, Serve(), Fail(503, retry_after="0"), Cut(after=20_000), Stall(3), then=Serve())
        config = _config(server.url, tmp_path, "streamed", **{"source.timeout_s": 1.0})
        run_warc_pass(config, plan_units(config), LocalEngine(workers=1, progress=False))
        asked = _bytes_asked(server, rel)
    assert _rows(config.run_dir) == _rows(local.run_dir) != []
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()], "a streamed file was written to disk"
    size = built.path.stat().st_size
    # every block once, plus the three failed attempts at one block
    assert asked < size + 4 * BLOCK, f"asked for {asked} bytes of a {size}-byte file"


def test_each_range_of_a_split_file_fetches_about_its_own_bytes(
    mirror: tuple[Path, str, BuiltWarc], tmp_path: Path
) -> None:
    root, rel, built = mirror
    with FaultServer(root) as server:
        config = _config(server.url, tmp_path, "split", **{"source.split_warcs": 3})
        run_warc_pass(config, plan_units(config), LocalEngine(workers=1, progress=False))
        asked = _bytes_asked(server, rel)
    whole = _config(f"{root}/", tmp_path, "whole")
    run_warc_pass(whole, plan_units(whole), LocalEngine(workers=1, progress=False))
    assert _rows(config.run_dir) == _rows(whole.run_dir)
    assert {p.partition(".")[0] for p in done_parts(config.run_dir)} == {f"part-00000-00{j}" for j in range(3)}
    # three ranges: each reads its share plus a block or two around its edges and the first member's block
    assert asked < built.path.stat().st_size + 3 * 3 * BLOCK


def test_an_error_page_instead_of_a_warc_fails_its_part_at_once(tmp_path: Path) -> None:
    rel = f"crawl-data/{DUMP}/segments/1/warc/page.warc.gz"
    (tmp_path / rel).parent.mkdir(parents=True)
    (tmp_path / rel).write_bytes(b"<html><body>503 Service Unavailable</body></html>\n")
    (tmp_path / "crawl-data" / DUMP / "warc.paths.gz").write_bytes(gzip.compress(f"{rel}\n".encode()))
    with FaultServer(tmp_path) as server:
        config = _config(server.url, tmp_path / "out", "page")
        with pytest.raises(RunIncomplete, match="did not return a gzip file"):
            run_warc_pass(config, plan_units(config), LocalEngine(workers=1, progress=False))
        assert len(server.requests_for("/" + rel)) == 1  # not retried: it will not turn into a WARC file
        with pytest.raises(NotGzipError):
            RemoteWarc(server.url, rel).check_warc()


def test_a_missing_file_and_a_server_without_ranges(mirror: tuple[Path, str, BuiltWarc], tmp_path: Path) -> None:
    root, rel, _ = mirror
    with FaultServer(root) as server:
        with pytest.raises(DownloadError, match="404") as err:
            RemoteWarc(server.url, rel.replace("00000", "00001"))
        assert err.value.status == 404
        server.script("/" + rel, then=Serve(ignore_range=True))
        config = _config(server.url, tmp_path, "noranges")
        run_warc_pass(config, plan_units(config), LocalEngine(workers=1, progress=False))  # downloaded whole instead
    assert read_documents(config.run_dir).num_rows > 0
