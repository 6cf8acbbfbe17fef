"""Listing and download against a real HTTP server that fails the way a CDN does, on real WARC files."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline import __version__
from pipeline.sources.commoncrawl import list_warc_paths, select_warc_paths, warc_paths_url, warc_url
from pipeline.sources.download import (
    DownloadError,
    NotGzipError,
    SourceTruncatedError,
    TruncatedGzipError,
    fetch_warc,
    verify_gzip,
)
from pipeline.sources.warc import read_warc
from tests.http_faults import Cut, Fail, FaultServer, Hang, Serve, Stall, Trickle, Truncate

DUMP = "CC-MAIN-2024-22"
SEGMENT = f"crawl-data/{DUMP}/segments/1715971057216.39/warc"
REL = f"{SEGMENT}/CC-MAIN-20240517233122-20240518023122-00000.warc.gz"
CLIPPED_REL = f"{SEGMENT}/CC-MAIN-20240517233122-20240518023122-00001.warc.gz"
FAST = {"backoff_s": 0.01, "timeout_s": 5.0}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def warc(realdata: Path) -> Path:
    """A real 2.5 MB Heritrix WARC: 822 gzip members, one per record."""
    return realdata / "warc_samples" / "archive-org-2008_heritrix.warc.gz"


@pytest.fixture(scope="module")
def clipped(realdata: Path) -> Path:
    """A real WARC whose only gzip member is cut short."""
    return realdata / "warc_samples" / "edge-case_clipped-record.warc.gz"


@pytest.fixture
def mirror(tmp_path: Path, warc: Path, clipped: Path) -> Path:
    """A directory in Common Crawl's layout: a listing and two WARC files (one complete, one clipped)."""
    root = tmp_path / "mirror"
    (root / SEGMENT).mkdir(parents=True)
    shutil.copyfile(warc, root / REL)
    shutil.copyfile(clipped, root / CLIPPED_REL)
    listing = "".join(f"{SEGMENT}/CC-MAIN-20240517233122-20240518023122-{i:05d}.warc.gz\n" for i in range(10))
    (root / "crawl-data" / DUMP / "warc.paths.gz").write_bytes(gzip.compress(listing.encode()))
    return root


@pytest.fixture
def server(mirror: Path) -> Iterator[FaultServer]:
    with FaultServer(mirror) as srv:
        yield srv
    assert not handler_threads(), "the fault server left handler threads running"


def handler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if "process_request_thread" in t.name]


def gets(server: FaultServer, rel: str = REL) -> list:
    return [r for r in server.requests_for("/" + rel) if r.method == "GET"]


def assert_nothing_left(dest: Path, rel: str = REL) -> None:
    final = dest / rel
    assert not final.exists()
    assert not final.with_name(final.name + ".partial").exists()
    assert not final.with_name(final.name + ".complete").exists()


# --- listing and selection ---------------------------------------------------------------------------------------


def test_listing_round_trip_over_http_and_local(server: FaultServer, mirror: Path) -> None:
    expected = [f"{SEGMENT}/CC-MAIN-20240517233122-20240518023122-{i:05d}.warc.gz" for i in range(10)]
    assert warc_paths_url(server.url, DUMP) == f"{server.url}crawl-data/{DUMP}/warc.paths.gz"
    assert warc_paths_url("https://data.commoncrawl.org", DUMP) == (
        f"https://data.commoncrawl.org/crawl-data/{DUMP}/warc.paths.gz"
    )
    assert warc_url("https://data.commoncrawl.org/", REL) == f"https://data.commoncrawl.org/{REL}"
    server.script(f"crawl-data/{DUMP}/warc.paths.gz", Fail(503))  # the listing is retried like any file
    assert list_warc_paths(server.url, DUMP, retries=2) == expected
    assert list_warc_paths(str(mirror), DUMP) == expected
    assert list_warc_paths(mirror.as_uri(), DUMP) == expected


def test_listing_errors_are_clear(server: FaultServer, mirror: Path) -> None:
    with pytest.raises(DownloadError, match="CC-MAIN-2099-01.*not found.*check the dump id") as err:
        list_warc_paths(server.url, "CC-MAIN-2099-01", retries=3)
    assert f"{server.url}crawl-data/CC-MAIN-2099-01/warc.paths.gz" in str(err.value)
    assert len(server.requests_for("/crawl-data/CC-MAIN-2099-01/warc.paths.gz")) == 1
    with pytest.raises(DownloadError, match="check the dump id"):
        list_warc_paths(str(mirror), "CC-MAIN-2099-01")

    listing = mirror / "crawl-data" / DUMP / "warc.paths.gz"
    listing.write_bytes(b"<html>Access denied</html>\n")
    with pytest.raises(DownloadError, match="not a valid gzip"):
        list_warc_paths(server.url, DUMP, retries=3)
    assert len(server.requests_for(f"/crawl-data/{DUMP}/warc.paths.gz")) == 1  # not gzip at all: no retry

    listing.write_bytes(gzip.compress(b"\n\n"))
    with pytest.raises(DownloadError, match="empty"):
        list_warc_paths(server.url, DUMP)


def test_selection_is_deterministic_and_shards_partition_the_head() -> None:
    paths = [f"p{i:03d}" for i in range(103)]
    assert select_warc_paths(paths) == paths
    assert select_warc_paths(paths, limit=5) == ["p000", "p001", "p002", "p003", "p004"]
    assert select_warc_paths(paths, limit=7, shard=1, num_shards=3) == ["p001", "p004"]
    assert select_warc_paths(paths, limit=500) == paths
    for limit in (None, 50):
        shards = [select_warc_paths(paths, limit=limit, shard=s, num_shards=4) for s in range(4)]
        assert shards == [select_warc_paths(list(paths), limit=limit, shard=s, num_shards=4) for s in range(4)]
        flat = [p for shard in shards for p in shard]
        assert len(flat) == len(set(flat))  # disjoint
        assert sorted(flat) == paths[:limit]  # together they cover the head exactly
    for bad in ({"shard": 4, "num_shards": 4}, {"shard": -1, "num_shards": 2}, {"num_shards": 0}, {"limit": -1}):
        with pytest.raises(ValueError):
            select_warc_paths(paths, **bad)


# --- retries -----------------------------------------------------------------------------------------------------


def test_500_then_success(server: FaultServer, tmp_path: Path, warc: Path, caplog: pytest.LogCaptureFixture) -> None:
    server.script(REL, Fail(500))
    with caplog.at_level(logging.WARNING, logger="pipeline.sources.download"):
        path = fetch_warc(server.url, REL, tmp_path / "dl", **FAST)
    assert path == tmp_path / "dl" / REL
    assert sha256(path) == sha256(warc)
    assert len(gets(server)) == 2
    assert all(
        r.user_agent == f"cc-refinery/{__version__} (Common Crawl pretraining data pipeline)" for r in gets(server)
    )
    assert any("attempt 1 of 6" in r.message and "HTTP 500" in r.message for r in caplog.records)
    sidecar = json.loads(path.with_name(path.name + ".complete").read_text())
    assert sidecar["size"] == warc.stat().st_size
    assert sidecar["sha256"] == sha256(warc)
    assert sidecar["gzip_members"] == 822
    assert not path.with_name(path.name + ".partial").exists()


def test_429_honours_retry_after(server: FaultServer, tmp_path: Path, warc: Path) -> None:
    server.script(REL, Fail(429, retry_after="1"))
    start = time.monotonic()
    path = fetch_warc(server.url, REL, tmp_path, **FAST)
    assert time.monotonic() - start >= 1.0  # backoff alone would wait ~0.01 s
    assert sha256(path) == sha256(warc)


def test_503_beyond_retries_raises(server: FaultServer, tmp_path: Path) -> None:
    server.script(REL, then=Fail(503))
    with pytest.raises(DownloadError, match="HTTP 503") as err:
        fetch_warc(server.url, REL, tmp_path, retries=3, **FAST)
    assert server.url + REL in str(err.value)
    assert err.value.status == 503
    assert len(gets(server)) == 4  # first try + 3 retries
    assert_nothing_left(tmp_path)


def test_404_fails_at_once_with_url(server: FaultServer, tmp_path: Path) -> None:
    missing = f"{SEGMENT}/CC-MAIN-20240517233122-20240518023122-00009.warc.gz"
    with pytest.raises(DownloadError, match="HTTP 404") as err:
        fetch_warc(server.url, missing, tmp_path, **FAST)
    assert server.url + missing in str(err.value)
    assert err.value.status == 404
    assert len(server.requests) == 1
    with pytest.raises(DownloadError, match="gopher://mirror.example/.*no storage backend for scheme 'gopher'"):
        fetch_warc("gopher://mirror.example/", REL, tmp_path)  # default 1 s backoff: a retry would show in the time
    server.script(REL, then=Fail(403))
    with pytest.raises(DownloadError, match="HTTP 403"):
        fetch_warc(server.url, REL, tmp_path, **FAST)
    assert len(gets(server)) == 1


def test_timeout_is_retried(server: FaultServer, tmp_path: Path, warc: Path) -> None:
    server.script(REL, Stall(1.5))
    path = fetch_warc(server.url, REL, tmp_path, retries=2, backoff_s=0.01, timeout_s=0.3)
    assert sha256(path) == sha256(warc)
    assert len(gets(server)) == 2


# --- resume ------------------------------------------------------------------------------------------------------


def test_reset_mid_body_resumes_with_range(server: FaultServer, tmp_path: Path, warc: Path) -> None:
    server.script(REL, Cut(after=1_000_003), Cut(after=700_000))
    path = fetch_warc(server.url, REL, tmp_path, **FAST)
    assert [r.range for r in gets(server)] == [None, "bytes=1000003-", "bytes=1700003-"]
    assert sha256(path) == sha256(warc)


def test_server_ignoring_range_restarts_from_zero(server: FaultServer, tmp_path: Path, warc: Path) -> None:
    server.script(REL, Cut(after=1_000_000), then=Serve(ignore_range=True))
    path = fetch_warc(server.url, REL, tmp_path, **FAST)
    assert [r.range for r in gets(server)] == [None, "bytes=1000000-"]
    assert path.stat().st_size == warc.stat().st_size
    assert sha256(path) == sha256(warc)


def test_truncated_body_is_retried(server: FaultServer, tmp_path: Path, warc: Path) -> None:
    server.script(REL, Truncate(after=123_456), Truncate(after=1))
    path = fetch_warc(server.url, REL, tmp_path, **FAST)
    assert [r.range for r in gets(server)] == [None, "bytes=123456-", "bytes=123457-"]
    assert sha256(path) == sha256(warc)


def test_partial_from_an_earlier_run_is_resumed(server: FaultServer, tmp_path: Path, warc: Path) -> None:
    partial = tmp_path / (REL + ".partial")
    partial.parent.mkdir(parents=True)
    partial.write_bytes(warc.read_bytes()[:2_000_000])
    path = fetch_warc(server.url, REL, tmp_path, **FAST)
    assert [r.range for r in gets(server)] == ["bytes=2000000-"]
    assert sha256(path) == sha256(warc)

    # a partial that already holds everything: the server answers 416, the file is verified, not refetched
    path.unlink()
    path.with_name(path.name + ".complete").unlink()
    shutil.copyfile(warc, partial)
    assert sha256(fetch_warc(server.url, REL, tmp_path, **FAST)) == sha256(warc)
    assert [r.range for r in gets(server)][-1] == f"bytes={warc.stat().st_size}-"
    assert len(gets(server)) == 2


def test_corrupt_partial_is_refetched_from_scratch(server: FaultServer, tmp_path: Path, warc: Path) -> None:
    partial = tmp_path / (REL + ".partial")
    partial.parent.mkdir(parents=True)
    data = bytearray(warc.read_bytes()[:1_500_000])
    data[800_000:800_010] = b"\x00" * 10  # bytes damaged on disk before the crash
    partial.write_bytes(bytes(data))
    path = fetch_warc(server.url, REL, tmp_path, **FAST)
    assert [r.range for r in gets(server)] == ["bytes=1500000-", None]
    assert sha256(path) == sha256(warc)


# --- integrity ---------------------------------------------------------------------------------------------------


def test_clipped_gzip_at_the_source_fails_after_one_download(server: FaultServer, tmp_path: Path) -> None:
    """Without salvage, a file whose bytes all arrived but end inside a member fails at once: refetching returns
    the same bytes (it was downloaded retries + 1 times before)."""
    with pytest.raises(DownloadError, match="truncated gzip at the source") as err:
        fetch_warc(server.url, CLIPPED_REL, tmp_path, retries=2, **FAST)
    assert isinstance(err.value, SourceTruncatedError)
    assert server.url + CLIPPED_REL in str(err.value)
    assert len(gets(server, CLIPPED_REL)) == 1
    assert_nothing_left(tmp_path, CLIPPED_REL)


def test_complete_file_clipped_inside_a_member_is_detected(server: FaultServer, tmp_path: Path, warc: Path) -> None:
    # the server consistently serves the first 1.2 MB as if that were the whole file (Content-Length agrees)
    server.script(REL, clip=1_200_000)
    with pytest.raises(TruncatedGzipError, match="truncated gzip"):
        fetch_warc(server.url, REL, tmp_path, retries=1, **FAST)
    assert len(gets(server)) == 1
    assert_nothing_left(tmp_path)
    server.script(REL)  # the mirror heals: the next run gets the real file
    assert sha256(fetch_warc(server.url, REL, tmp_path, **FAST)) == sha256(warc)


def test_verify_gzip_on_real_files(tmp_path: Path, warc: Path, clipped: Path) -> None:
    verify_gzip(warc)
    with pytest.raises(TruncatedGzipError, match="truncated gzip.*member 1"):
        verify_gzip(clipped)
    data = warc.read_bytes()
    cases = {
        "empty": (b"", "empty"),
        "html": (b"<html>503</html>", "not a gzip file"),
        "cut": (data[:-100], "truncated gzip"),
        "flipped": (data[:1_000_000] + bytes([data[1_000_000] ^ 0xFF]) + data[1_000_001:], "corrupt gzip"),
        "garbage_after": (data + b"trailing junk", "corrupt gzip"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(TruncatedGzipError, match=message):
            verify_gzip(tmp_path / name)


# --- reruns and local sources ------------------------------------------------------------------------------------


def test_rerun_skips_a_verified_file_without_any_request(mirror: Path, tmp_path: Path, warc: Path) -> None:
    with FaultServer(mirror) as srv:
        first = fetch_warc(srv.url, REL, tmp_path, **FAST)
        assert sha256(first) == sha256(warc)
        asked = len(srv.requests)
        again = fetch_warc(srv.url, REL, tmp_path, retries=0, **FAST)
        assert len(srv.requests) == asked  # not even a HEAD
        url = srv.url
    assert again == first
    assert fetch_warc(url, REL, tmp_path, retries=0, **FAST) == first  # the server is gone: a request would fail
    assert sha256(again) == sha256(warc)


def test_final_file_without_sidecar_is_checked_again(server: FaultServer, tmp_path: Path, warc: Path) -> None:
    final = tmp_path / REL
    final.parent.mkdir(parents=True)
    final.write_bytes(warc.read_bytes()[:1_000_000])  # e.g. copied in by hand, never verified
    path = fetch_warc(server.url, REL, tmp_path, **FAST)
    assert [r.range for r in gets(server)] == ["bytes=1000000-"]
    assert sha256(path) == sha256(warc)


def test_local_base_is_verified_in_place(mirror: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dl"
    for base in (str(mirror), mirror.as_uri(), str(mirror) + "/"):
        assert fetch_warc(base, REL, dest) == mirror / REL
    assert not dest.exists()  # nothing copied
    with pytest.raises(TruncatedGzipError, match="truncated gzip"):
        fetch_warc(str(mirror), CLIPPED_REL, dest)
    with pytest.raises(DownloadError, match="not found"):
        fetch_warc(str(mirror), f"{SEGMENT}/missing.warc.gz", dest)


def test_listing_entries_cannot_escape_the_download_dir(server: FaultServer, tmp_path: Path) -> None:
    for bad in ("../../etc/passwd.gz", "crawl-data/../../x.warc.gz", "", "a\\..\\b.gz"):
        with pytest.raises(DownloadError, match="unsafe or empty"):
            fetch_warc(server.url, bad, tmp_path / "dl", **FAST)
    assert server.requests == []
    assert not (tmp_path / "dl").exists()


# --- truncated at the source: salvaged ---------------------------------------------------------------------------


def read_ids(path: Path) -> tuple[list[str], Counter[str]]:
    counters: Counter[str] = Counter()
    tables = list(read_warc(path, dump=DUMP, warc_path=REL, counters=counters))
    return [i for t in tables for i in t.column("id").to_pylist()], counters


def test_source_truncated_warc_is_salvaged_once_and_not_refetched(
    mirror: Path, tmp_path: Path, warc: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A real WARC served cut at 1.2 MB (Content-Length agrees): one download, kept, its records before the cut read."""
    with FaultServer(mirror) as srv:
        srv.script(REL, clip=1_200_000)
        with caplog.at_level(logging.WARNING, logger="pipeline.sources.download"):
            path = fetch_warc(srv.url, REL, tmp_path, salvage_truncated=True, **FAST)
        assert len(gets(srv)) == 1
        url = srv.url
    assert any("truncated at the source" in r.message and url + REL in r.message for r in caplog.records)
    assert path.read_bytes() == warc.read_bytes()[:1_200_000]
    sidecar = json.loads(path.with_name(path.name + ".complete").read_text())
    assert sidecar["truncated_at_source"] is True and sidecar["size"] == 1_200_000
    assert 0 < sidecar["cut_member_offset"] < 1_200_000
    assert not path.with_name(path.name + ".partial").exists()

    again = fetch_warc(url, REL, tmp_path, retries=0, salvage_truncated=True, **FAST)  # server gone: no request
    assert again == path

    salvaged, counters = read_ids(path)
    full, _ = read_ids(warc)
    assert counters["truncated_file"] == 1
    assert 0 < len(salvaged) < len(full) and salvaged == full[: len(salvaged)]
    prefix = tmp_path / "prefix.warc.gz"  # the file up to its last complete member: every record there is salvaged
    prefix.write_bytes(warc.read_bytes()[: sidecar["cut_member_offset"]])
    assert salvaged[: len(read_ids(prefix)[0])] == read_ids(prefix)[0]


def test_salvage_after_a_resumed_download(server: FaultServer, tmp_path: Path, clipped: Path) -> None:
    """All bytes arrive over two attempts (reset, then Range): the source's cut is recognised from the total."""
    server.script(CLIPPED_REL, Cut(after=10_000))
    path = fetch_warc(server.url, CLIPPED_REL, tmp_path, salvage_truncated=True, **FAST)
    assert [r.range for r in gets(server, CLIPPED_REL)] == [None, "bytes=10000-"]
    assert path.read_bytes() == clipped.read_bytes()
    ids, counters = read_ids(path)
    assert len(ids) == 1 and counters["truncated_record"] == 1 and counters["truncated_file"] == 1


def test_salvage_does_not_accept_transport_cuts_corrupt_or_non_gzip(
    server: FaultServer, mirror: Path, tmp_path: Path, warc: Path
) -> None:
    # a short body (fewer bytes than Content-Length) is our cut, not the source's: resumed, never salvaged
    server.script(REL, Truncate(after=1_000_000))
    assert sha256(fetch_warc(server.url, REL, tmp_path / "a", salvage_truncated=True, **FAST)) == sha256(warc)
    # corrupt data may be damage on the way: fetched again, then failed (read_warc never sees it)
    data = bytearray(warc.read_bytes())
    data[1_000_000] ^= 0xFF
    (mirror / REL).write_bytes(bytes(data))
    with pytest.raises(TruncatedGzipError, match="corrupt gzip"):
        fetch_warc(server.url, REL, tmp_path / "b", retries=1, salvage_truncated=True, **FAST)
    assert_nothing_left(tmp_path / "b")
    # an HTML error page is not a WARC file: fails at once with a clear message
    (mirror / REL).write_bytes(b"<html>Access denied</html>")
    with pytest.raises(NotGzipError, match="did not return a gzip file"):
        fetch_warc(server.url, REL, tmp_path / "c", salvage_truncated=True, **FAST)
    with pytest.raises(DownloadError, match="HTTP 404") as err:
        fetch_warc(server.url, f"{SEGMENT}/missing.warc.gz", tmp_path / "d", salvage_truncated=True, **FAST)
    assert err.value.status == 404


def test_local_truncated_file_is_salvaged_in_place(mirror: Path, tmp_path: Path) -> None:
    assert fetch_warc(str(mirror), CLIPPED_REL, tmp_path, salvage_truncated=True) == mirror / CLIPPED_REL
    (mirror / REL).write_bytes(b"<html>not a WARC</html>")
    with pytest.raises(NotGzipError):
        fetch_warc(str(mirror), REL, tmp_path, salvage_truncated=True)


# --- download limits: stall, too slow, deadline ------------------------------------------------------------------

LIMITS = {"backoff_s": 0.01, "timeout_s": 30.0, "speed_window_s": 0.3, "min_speed_bps": 100_000.0}
"""Tiny limits: without them a stalled or trickling server would hold these tests for 30 s per attempt."""


def test_stall_after_headers_is_resumed_with_range(
    server: FaultServer, tmp_path: Path, warc: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server.script(REL, Hang(after=300_000))
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="pipeline.sources.download"):
        path = fetch_warc(server.url, REL, tmp_path, **LIMITS)
    assert time.monotonic() - start < 10
    # resumed from the stall point; on a loaded machine a resumed attempt may itself miss the 0.3 s window
    # before its headers, and the next one asks for the same range again
    first, *resumed = [r.range for r in gets(server)]
    assert first is None and resumed and set(resumed) == {"bytes=300000-"}
    assert sha256(path) == sha256(warc)
    assert any("stalled: no data" in r.message and "at byte 300000" in r.message for r in caplog.records)


def test_endless_stall_gives_up_saying_stall(server: FaultServer, tmp_path: Path) -> None:
    server.script(REL, then=Hang(after=1000))
    start = time.monotonic()
    with pytest.raises(DownloadError, match="stalled") as err:
        fetch_warc(server.url, REL, tmp_path, retries=2, **LIMITS)
    assert time.monotonic() - start < 10
    assert err.value.limit == "stall" and server.url + REL in str(err.value)
    assert [r.range for r in gets(server)] == [None, "bytes=1000-", "bytes=2000-"]
    assert (tmp_path / (REL + ".partial")).stat().st_size == 3000  # kept: a rerun resumes


def test_stall_before_headers_is_a_stall(server: FaultServer, tmp_path: Path) -> None:
    server.script(REL, then=Stall(60))
    with pytest.raises(DownloadError, match="stalled: no response headers") as err:
        fetch_warc(server.url, REL, tmp_path, retries=1, **LIMITS)
    assert err.value.limit == "stall"
    assert len(gets(server)) == 2


def test_trickle_is_too_slow_then_resumed(
    server: FaultServer, tmp_path: Path, warc: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server.script(REL, Trickle(rate=5_000, after=200_000))
    with caplog.at_level(logging.WARNING, logger="pipeline.sources.download"):
        path = fetch_warc(server.url, REL, tmp_path, **LIMITS)
    ranges = [r.range for r in gets(server)]
    assert ranges[0] is None and len(ranges) == 2
    assert int(ranges[1].removeprefix("bytes=").rstrip("-")) >= 200_000
    assert sha256(path) == sha256(warc)
    assert any("too slow" in r.message for r in caplog.records)


def test_endless_trickle_gives_up_saying_too_slow(server: FaultServer, tmp_path: Path) -> None:
    """Each trickling attempt adds bytes, but too few to count as progress: the retries run out."""
    server.script(REL, then=Trickle(rate=5_000))
    start = time.monotonic()
    with pytest.raises(DownloadError, match="too slow") as err:
        fetch_warc(server.url, REL, tmp_path, retries=2, **LIMITS)
    assert time.monotonic() - start < 10
    assert err.value.limit == "too_slow" and server.url + REL in str(err.value)
    assert len(gets(server)) == 3
    assert 0 < (tmp_path / (REL + ".partial")).stat().st_size < 100_000


def test_deadline_ends_a_slow_download_and_a_rerun_resumes(server: FaultServer, tmp_path: Path, warc: Path) -> None:
    """Fast enough for the speed limit (200 KB/s), too slow for the deadline (2.5 MB in 1 s)."""
    server.script(REL, then=Trickle(rate=200_000))
    start = time.monotonic()
    with pytest.raises(DownloadError, match="deadline") as err:
        fetch_warc(server.url, REL, tmp_path, deadline_s=1.0, **LIMITS)
    assert time.monotonic() - start < 5
    assert err.value.limit == "deadline" and server.url + REL in str(err.value)
    assert len(gets(server)) == 1
    kept = (tmp_path / (REL + ".partial")).stat().st_size
    assert 0 < kept < warc.stat().st_size

    server.script(REL)  # the mirror recovers
    path = fetch_warc(server.url, REL, tmp_path, deadline_s=30.0, **LIMITS)
    assert gets(server)[-1].range == f"bytes={kept}-"
    assert sha256(path) == sha256(warc)


def test_deadline_is_not_overslept_in_backoff(server: FaultServer, tmp_path: Path) -> None:
    """A Retry-After longer than the time left ends the download now instead of sleeping past the deadline."""
    server.script(REL, then=Fail(503, retry_after="60"))
    start = time.monotonic()
    with pytest.raises(DownloadError, match="deadline.*HTTP 503") as err:
        fetch_warc(server.url, REL, tmp_path, deadline_s=2.0, **LIMITS)
    assert time.monotonic() - start < 2
    assert err.value.limit == "deadline"
    assert len(gets(server)) == 1
