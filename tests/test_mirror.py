"""The local mirror server: whole files, byte ranges, errors, traversal, concurrency, and the sample crawl over HTTP."""

from __future__ import annotations

import gzip
import http.client
import io
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from warcio.archiveiterator import ArchiveIterator

from pipeline.demo.mirror import parse_range, serve_directory
from pipeline.demo.samplecrawl import SAMPLE_DATA, build_sample_crawl

REAL_WARC = SAMPLE_DATA / "warc" / "wget-sample-0000.warc.gz"  # a real 214 kB WARC file


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("mirror")
    (base / "secret.txt").write_text("outside the mirror")
    root = base / "root"
    (root / "crawl-data" / "x").mkdir(parents=True)
    (root / "crawl-data" / "x" / "real.warc.gz").write_bytes(REAL_WARC.read_bytes())
    (root / "empty.bin").write_bytes(b"")
    (root / "small.txt").write_bytes(b"0123456789")
    (root / "escape").symlink_to(base / "secret.txt")
    return root


@pytest.fixture(scope="module")
def base_url(root: Path):
    with serve_directory(root) as url:
        yield url


def _raw_get(base_url: str, path: str) -> tuple[int, bytes]:
    """Send the path exactly as written (requests would normalise dot segments)."""
    parts = urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_base_url_is_loopback(base_url: str) -> None:
    parts = urlsplit(base_url)
    assert parts.scheme == "http" and parts.hostname == "127.0.0.1" and parts.port and base_url.endswith("/")


def test_full_get_returns_the_file_unchanged(base_url: str, root: Path) -> None:
    r = requests.get(base_url + "crawl-data/x/real.warc.gz", timeout=10)
    assert r.status_code == 200
    assert r.content == REAL_WARC.read_bytes()  # still gzip: no Content-Encoding, nothing decoded on the way
    assert "Content-Encoding" not in r.headers
    assert r.headers["Content-Length"] == str(REAL_WARC.stat().st_size)
    assert r.headers["Accept-Ranges"] == "bytes"
    records = list(ArchiveIterator(io.BytesIO(r.content)))
    assert sum(rec.rec_type == "response" for rec in records) == 22


def test_head(base_url: str) -> None:
    r = requests.head(base_url + "crawl-data/x/real.warc.gz", timeout=10)
    assert r.status_code == 200 and r.content == b""
    assert int(r.headers["Content-Length"]) == REAL_WARC.stat().st_size
    r = requests.head(base_url + "small.txt", headers={"Range": "bytes=2-4"}, timeout=10)
    assert r.status_code == 206 and r.headers["Content-Range"] == "bytes 2-4/10" and r.content == b""


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        ("bytes=1000-1999", 1000, 1999),  # middle
        ("bytes=200000-", 200000, None),  # open-ended
        ("bytes=-500", -500, None),  # suffix
        ("bytes=0-0", 0, 0),
        ("bytes=213000-999999999", 213000, None),  # end past the file is clipped
    ],
)
def test_ranges(base_url: str, header: str, first: int, last: int | None) -> None:
    data = REAL_WARC.read_bytes()
    expected = data[first:] if last is None else data[first : last + 1]
    r = requests.get(base_url + "crawl-data/x/real.warc.gz", headers={"Range": header}, timeout=10)
    assert r.status_code == 206
    assert r.content == expected
    start = first if first >= 0 else len(data) + first
    assert r.headers["Content-Range"] == f"bytes {start}-{start + len(expected) - 1}/{len(data)}"
    assert r.headers["Content-Length"] == str(len(expected))


def test_suffix_longer_than_file_gives_whole_file(base_url: str) -> None:
    r = requests.get(base_url + "small.txt", headers={"Range": "bytes=-50"}, timeout=10)
    assert r.status_code == 206 and r.content == b"0123456789" and r.headers["Content-Range"] == "bytes 0-9/10"


@pytest.mark.parametrize(
    ("path", "header"), [("small.txt", "bytes=10-"), ("small.txt", "bytes=-0"), ("empty.bin", "bytes=0-")]
)
def test_unsatisfiable_range_is_416(base_url: str, path: str, header: str) -> None:
    r = requests.get(base_url + path, headers={"Range": header}, timeout=10)
    assert r.status_code == 416
    size = 10 if path == "small.txt" else 0
    assert r.headers["Content-Range"] == f"bytes */{size}" and r.content == b""


@pytest.mark.parametrize("header", ["bytes=5-2", "items=0-1", "bytes=0-1,4-5", "bytes=abc"])
def test_ranges_this_server_ignores_give_the_whole_file(base_url: str, header: str) -> None:
    r = requests.get(base_url + "small.txt", headers={"Range": header}, timeout=10)
    assert r.status_code == 200 and r.content == b"0123456789"


def test_missing_files_and_directories_are_404(base_url: str) -> None:
    assert requests.get(base_url + "nope.warc.gz", timeout=10).status_code == 404
    assert requests.get(base_url + "crawl-data/", timeout=10).status_code == 404  # no listings
    assert requests.get(base_url, timeout=10).status_code == 404
    assert requests.head(base_url + "crawl-data/x/missing", timeout=10).status_code == 404
    r = requests.get(base_url + "empty.bin", timeout=10)
    assert r.status_code == 200 and r.content == b"" and r.headers["Content-Length"] == "0"


@pytest.mark.parametrize(
    "path", ["/../secret.txt", "/crawl-data/../../secret.txt", "/%2e%2e/secret.txt", "/..%2fsecret.txt", "/escape"]
)
def test_path_traversal_is_refused(base_url: str, path: str) -> None:
    status, body = _raw_get(base_url, path)
    assert status == 403
    assert b"outside the mirror" not in body


def test_query_strings_are_ignored(base_url: str) -> None:
    r = requests.get(base_url + "small.txt?x=1", timeout=10)
    assert r.status_code == 200 and r.content == b"0123456789"


def test_unsupported_method(base_url: str) -> None:
    assert requests.post(base_url + "small.txt", data=b"x", timeout=10).status_code == 501


def test_concurrent_range_downloads_reassemble_the_file(base_url: str) -> None:
    data = REAL_WARC.read_bytes()
    step = 16_384
    starts = list(range(0, len(data), step))

    def fetch(start: int) -> bytes:
        with requests.Session() as s:
            r = s.get(
                base_url + "crawl-data/x/real.warc.gz",
                headers={"Range": f"bytes={start}-{start + step - 1}"},
                timeout=10,
            )
            assert r.status_code == 206
            return r.content

    with ThreadPoolExecutor(max_workers=8) as pool:
        parts = list(pool.map(fetch, starts))
        wholes = list(
            pool.map(lambda _: requests.get(base_url + "crawl-data/x/real.warc.gz", timeout=10).content, range(8))
        )
    assert b"".join(parts) == data
    assert all(w == data for w in wholes)


def test_keep_alive_session_serves_many_requests(base_url: str) -> None:
    with requests.Session() as s:
        for i in range(20):
            r = s.get(base_url + "small.txt", headers={"Range": f"bytes={i % 10}-{i % 10}"}, timeout=10)
            assert r.content == str(i % 10).encode()


def test_server_stops_on_exit(root: Path) -> None:
    with serve_directory(root) as url:
        parts = urlsplit(url)
        assert requests.get(url + "small.txt", timeout=10).status_code == 200
    with pytest.raises(OSError), socket.create_connection((parts.hostname, parts.port), timeout=2):
        pass


def test_root_must_be_a_directory(root: Path) -> None:
    with pytest.raises(NotADirectoryError), serve_directory(root / "small.txt"):
        pass


def test_parse_range() -> None:
    assert parse_range(None, 10) is None
    assert parse_range("bytes=0-4", 10) == (0, 4)
    assert parse_range("bytes=7-", 10) == (7, 9)
    assert parse_range("bytes=-3", 10) == (7, 9)
    assert parse_range("bytes=8-100", 10) == (8, 9)
    assert parse_range("bytes=10-", 10) == "unsatisfiable"
    assert parse_range("bytes=-0", 10) == "unsatisfiable"
    assert parse_range("bytes=4-2", 10) is None
    assert parse_range("bytes=1-2,5-6", 10) is None


def test_serve_forever_stops_cleanly_on_ctrl_c(root: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = (
        "import logging, sys; logging.basicConfig(level=logging.INFO);"
        "from pipeline.demo.mirror import serve_forever; serve_forever(sys.argv[1], '127.0.0.1', int(sys.argv[2]))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(root), str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                r = requests.get(f"http://127.0.0.1:{port}/small.txt", timeout=2)
                break
            except requests.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
                time.sleep(0.1)
        assert r.content == b"0123456789"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert b"Traceback" not in err and b"stopping" in err


def test_sample_crawl_downloads_over_http(tmp_path: Path) -> None:
    crawl = build_sample_crawl(tmp_path, num_warcs=2)
    with serve_directory(tmp_path) as url:
        listing = requests.get(f"{url}crawl-data/{crawl.dump}/warc.paths.gz", timeout=10)
        paths = gzip.decompress(listing.content).decode().split()
        assert paths == crawl.warc_paths
        responses = 0
        for rel in paths:
            r = requests.get(url + rel, stream=True, timeout=10)
            assert r.status_code == 200
            body = r.raw.read()
            assert body == (tmp_path / rel).read_bytes()
            responses += sum(rec.rec_type == "response" for rec in ArchiveIterator(io.BytesIO(body)))
    assert responses >= crawl.num_html_responses
    assert os.path.getsize(tmp_path / paths[0]) > 100_000
