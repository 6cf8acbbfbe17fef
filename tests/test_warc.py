"""WARC reading and HTML decoding on the real samples in shared/realdata (and damaged copies of them)."""

from __future__ import annotations

import codecs
import gzip
import json
import os
import re
import subprocess
import sys
import zlib
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.core.schema import RAW_SCHEMA
from pipeline.sources.warc import (
    REPLACED,
    decode_html,
    is_html,
    parse_warc_date,
    read_warc,
    sniff_html,
    url_domain,
)


@pytest.fixture(scope="session")
def warcs(realdata: Path) -> Path:
    return realdata / "warc_samples"


def read_all(path: Path, warc_path: str | None = None) -> tuple[pa.Table, Counter[str]]:
    counters: Counter[str] = Counter()
    batches = list(read_warc(path, dump="CC-MAIN-2024-22", warc_path=warc_path or path.name, counters=counters))
    for batch in batches:
        assert batch.schema == RAW_SCHEMA
    table = pa.concat_tables(batches) if batches else RAW_SCHEMA.empty_table()
    return table, counters


# file -> (HTML responses as in the realdata README table, of which HTTP 200)
EXPECTED = {
    "cc-main-2020-34_excerpt.warc.gz": (16, 16),
    "cc-main-2024-22_whirlwind.warc.gz": (1, 1),
    "cc-2019_single-record.warc.gz": (1, 1),
    "archive-org-2008_heritrix.warc.gz": (140, 94),
    "iana-org_liveweb.warc.gz": (20, 16),
    "bl-gov-uk-2014_heritrix-a.warc.gz": (36, 32),
    "wget-iah-urls.warc.gz": (11, 2),
    "wget-sample-0000.warc.gz": (22, 22),
    "edge-case_clipped-record.warc.gz": (1, 1),
    "cc-main-2024-22_whirlwind.warc.wet.gz": (0, 0),
    "cc-main-2024-22_whirlwind.warc.wat.gz": (0, 0),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_html_response_counts_match_readme(warcs: Path, name: str) -> None:
    """The README counts HTML responses of any status; we keep HTTP 200 only and count the rest by status."""
    html, ok = EXPECTED[name]
    table, counters = read_all(warcs / name)
    assert counters["html"] == html
    assert table.num_rows == counters["documents"] == ok
    assert counters["skipped_http_status"] == html - ok
    assert counters["records"] == counters["responses"] + counters["skipped_non_response"]
    assert counters["responses"] == counters["html"] + counters["skipped_non_html"] + counters["skipped_non_http"]
    assert counters["broken_record"] == 0
    if ok:
        assert all(h and "<" in h for h in table.column("html").to_pylist())


def test_ids_unique_and_stable(warcs: Path) -> None:
    ids: list[str] = []
    for name in sorted(EXPECTED):
        first, _ = read_all(warcs / name)
        again, _ = read_all(warcs / name)
        assert first.column("id").to_pylist() == again.column("id").to_pylist()
        ids.extend(first.column("id").to_pylist())
    assert len(ids) == 185
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-fA-F-]{36}|[0-9a-f]{40}", i) for i in ids)  # bare uuid, else sha1


def test_known_common_crawl_record(warcs: Path) -> None:
    table, _ = read_all(warcs / "cc-main-2024-22_whirlwind.warc.gz", "crawl-data/CC-MAIN-2024-22/x.warc.gz")
    row = table.to_pylist()[0]
    assert row["id"] == "2aabeff2-67f5-4608-8466-e87c6296e2b6"
    assert row["url"] == "https://an.wikipedia.org/wiki/Escopete"
    assert row["domain"] == "an.wikipedia.org"
    assert row["dump"] == "CC-MAIN-2024-22"
    assert row["warc_path"] == "crawl-data/CC-MAIN-2024-22/x.warc.gz"
    assert row["warc_date"] == datetime(2024, 5, 18, 1, 58, 10, tzinfo=UTC)
    assert "Escopete" in row["html"] and "municipio" in row["html"]


def test_warc_0_17_dates_urls_and_domains(warcs: Path) -> None:
    table, _ = read_all(warcs / "archive-org-2008_heritrix.warc.gz")
    rows = table.to_pylist()
    assert {r["warc_date"].year for r in rows} == {2008}
    by_url = {r["url"]: r for r in rows}
    home = by_url["http://www.archive.org/index.php"]
    assert home["domain"] == "archive.org"  # leading www. dropped
    assert "Internet Archive" in home["html"]
    assert all(r["domain"] and r["domain"] == r["domain"].lower() for r in rows)


def test_clipped_record_is_kept_and_counted(warcs: Path) -> None:
    """The single record is cut inside its payload: its page prefix is yielded, the file counted truncated."""
    table, counters = read_all(warcs / "edge-case_clipped-record.warc.gz")
    assert table.num_rows == 1
    assert counters["truncated_file"] == 1 and counters["truncated_record"] == 1
    html = table.column("html")[0].as_py()
    assert "Chance The Rapper" in html
    assert table.column("url")[0].as_py().startswith("http://www.houstonpress.com/music/a-humble-chance")


@pytest.mark.parametrize("fraction", [0.1, 0.37, 0.5, 0.83, 0.999])
def test_truncated_copy_yields_records_before_the_cut(warcs: Path, tmp_path: Path, fraction: float) -> None:
    source = warcs / "archive-org-2008_heritrix.warc.gz"
    full, _ = read_all(source)
    data = source.read_bytes()
    cut = tmp_path / "cut.warc.gz"
    cut.write_bytes(data[: int(len(data) * fraction)])
    table, counters = read_all(cut)
    assert counters["truncated_file"] == 1
    assert counters["broken_record"] == 0
    ids = table.column("id").to_pylist()
    # a prefix of the full file's documents, none twice; the record at the cut may be kept as a partial page
    assert ids == full.column("id").to_pylist()[: len(ids)]
    assert 0 < len(ids) <= full.num_rows
    assert len(ids) < full.num_rows or fraction > 0.99
    complete = len(ids) - counters["truncated_record"]
    assert full.column("html").to_pylist()[:complete] == table.column("html").to_pylist()[:complete]


def member_ends(data: bytes) -> list[int]:
    """The end offset of every complete gzip member, in order (where a clean cut leaves whole records)."""
    ends, pos = [], 0
    while pos < len(data):
        inflater = zlib.decompressobj(31)
        inflater.decompress(data[pos:])
        if not inflater.eof:
            break
        pos = len(data) - len(inflater.unused_data)
        ends.append(pos)
    return ends


def assert_cuts_keep_every_complete_record(source: Path, tmp_path: Path) -> int:
    """Cut ``source`` inside members and on member boundaries: every record before the cut is read, unchanged.

    The reference for a cut is the file up to the last member boundary before it, a valid (shorter) WARC file.
    Returns the number of documents salvaged from the cut at two thirds of the file.
    """
    data = source.read_bytes()
    ends = member_ends(data)
    assert ends[-1] == len(data)
    inside = [int(len(data) * f) for f in (0.05, 0.25, 0.5, 0.67, 0.9)]
    on_boundary = [ends[len(ends) * k // 5] for k in range(1, 5)]
    salvaged = 0
    for cut in sorted({*inside, *on_boundary} - {len(data)}):
        boundary = max((e for e in ends if e <= cut), default=0)
        (tmp_path / "prefix.warc.gz").write_bytes(data[:boundary])
        (tmp_path / "cut.warc.gz").write_bytes(data[:cut])
        before, _ = read_all(tmp_path / "prefix.warc.gz", source.name)
        table, counters = read_all(tmp_path / "cut.warc.gz", source.name)
        n = before.num_rows
        assert table.column("id").to_pylist()[:n] == before.column("id").to_pylist(), cut
        assert table.column("html").to_pylist()[:n] == before.column("html").to_pylist(), cut
        assert table.num_rows <= n + 1  # at most the record at the cut, as a partial page
        assert counters["truncated_file"] == (cut != boundary)
        assert counters["broken_record"] == 0
        if cut == inside[3]:
            salvaged = table.num_rows
    return salvaged


@pytest.mark.parametrize("name", ["archive-org-2008_heritrix.warc.gz", "cc-main-2020-34_excerpt.warc.gz"])
def test_every_complete_record_before_a_cut_is_read(warcs: Path, tmp_path: Path, name: str) -> None:
    assert assert_cuts_keep_every_complete_record(warcs / name, tmp_path) > 0


def test_every_complete_record_before_a_cut_is_read_sample_crawl(sample_crawl, tmp_path: Path) -> None:  # noqa: ANN001
    assert assert_cuts_keep_every_complete_record(sample_crawl.warc_files[0], tmp_path) > 0


def test_uncompressed_and_truncated_uncompressed(warcs: Path, tmp_path: Path) -> None:
    source = warcs / "cc-main-2020-34_excerpt.warc.gz"
    full, _ = read_all(source)
    plain = gzip.decompress(source.read_bytes())
    path = tmp_path / "plain.warc"
    path.write_bytes(plain)
    table, counters = read_all(path, source.name)
    assert table.column("id").to_pylist() == full.column("id").to_pylist()
    assert table.column("html").to_pylist() == full.column("html").to_pylist()
    assert counters["truncated_file"] == 0
    path.write_bytes(plain[: len(plain) // 2])
    half, counters = read_all(path, source.name)
    assert counters["truncated_file"] == 1
    assert half.column("id").to_pylist() == full.column("id").to_pylist()[: half.num_rows]


def test_corrupt_record_is_skipped_and_reading_goes_on(warcs: Path, tmp_path: Path) -> None:
    source = warcs / "cc-main-2020-34_excerpt.warc.gz"
    full, _ = read_all(source)
    data = bytearray(source.read_bytes())
    data[60_000:60_100] = b"\x00" * 100  # inside the gzip member of one response
    path = tmp_path / "corrupt.warc.gz"
    path.write_bytes(bytes(data))
    table, counters = read_all(path)
    assert counters["broken_record"] == 1
    assert counters["truncated_file"] == 0
    assert table.num_rows == full.num_rows - 1
    assert set(table.column("id").to_pylist()) < set(full.column("id").to_pylist())
    assert table.column("id").to_pylist()[-1] == full.column("id").to_pylist()[-1]


@pytest.mark.parametrize(
    ("inserted", "broken", "extra_records"),
    [
        (b"<html>not a WARC record</html>\n" * 20, 1, 0),  # FastWARC raises: skipped as one broken record
        (b"WARC/1.0\r\nthis is: not\r\na valid header\r\n\r\n\r\n\r\n", 0, 1),  # parsed as an unknown type
    ],
    ids=["not-warc", "bad-warc-headers"],
)
def test_inserted_bad_member_is_skipped(
    warcs: Path, tmp_path: Path, inserted: bytes, broken: int, extra_records: int
) -> None:
    """A complete gzip member that is not a usable record: counted, every real document still read once."""
    source = warcs / "cc-main-2020-34_excerpt.warc.gz"
    full, full_counters = read_all(source)
    data = source.read_bytes()
    split = 60_000 + data[60_000:].find(b"\x1f\x8b\x08")  # a member boundary in the middle of the file
    path = tmp_path / "inserted.warc.gz"
    path.write_bytes(data[:split] + gzip.compress(inserted) + data[split:])
    table, counters = read_all(path)
    assert counters["broken_record"] == broken
    assert counters["records"] == full_counters["records"] + extra_records
    assert table.column("id").to_pylist() == full.column("id").to_pylist()
    assert table.column("html").to_pylist() == full.column("html").to_pylist()


@pytest.mark.parametrize(
    "content",
    [os.urandom(20_000), b"\x1f\x8b\x08" + os.urandom(20_000), b"not a warc\n" * 500, b""],
    ids=["random", "gzip-magic-then-random", "text", "empty"],
)
def test_garbage_file_is_counted_not_raised(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "garbage.warc.gz"
    path.write_bytes(content)
    table, counters = read_all(path)
    assert table.num_rows == 0
    assert counters["broken_record"] + counters["truncated_file"] == (1 if content else 0)


def test_missing_file_is_counted(tmp_path: Path) -> None:
    table, counters = read_all(tmp_path / "absent.warc.gz")
    assert table.num_rows == 0 and counters["unreadable_file"] == 1


def test_batches_respect_batch_size(warcs: Path) -> None:
    counters: Counter[str] = Counter()
    sizes = [
        b.num_rows
        for b in read_warc(
            warcs / "archive-org-2008_heritrix.warc.gz", dump="d", warc_path="w", counters=counters, batch_size=40
        )
    ]
    assert sizes == [40, 40, 14]


def test_batches_end_at_batch_bytes_of_decoded_html(warcs: Path) -> None:
    """A worker's memory follows a batch's decoded HTML, not its page count: a batch ends once it holds
    ``batch_bytes`` of it (so it is under the cap plus one page), and no page is lost at the cuts."""
    path = warcs / "archive-org-2008_heritrix.warc.gz"
    (whole,) = read_warc(path, dump="d", warc_path="w", counters=Counter(), batch_size=1000)
    sizes = [sys.getsizeof(page) for page in whole.column("html").to_pylist()]
    cap = max(sum(sizes) // 5, max(sizes) + 1)
    batches = list(read_warc(path, dump="d", warc_path="w", counters=Counter(), batch_size=1000, batch_bytes=cap))
    assert pa.concat_tables(batches).column("id").to_pylist() == whole.column("id").to_pylist()
    expected, held, rows = [], 0, 0
    for size in sizes:
        held, rows = held + size, rows + 1
        if held >= cap:
            expected.append(rows)
            held, rows = 0, 0
    assert [b.num_rows for b in batches] == expected + ([rows] if rows else [])
    assert len(batches) >= 3


def test_spacy_loads_without_torch() -> None:
    """thinc imports torch when installed (about 180 MB in every worker); the word splitter keeps it out."""
    pytest.importorskip("torch")
    code = (
        "import sys; from filters.text import word_splitter; word_splitter('en').split('a b'); "
        "assert 'torch' not in sys.modules; import torch; print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.stdout.strip() == "ok", result.stderr[-2000:]


def test_selection_helpers() -> None:
    assert is_html("application/xhtml+xml", "text/html", None)
    assert not is_html("application/pdf", "text/html", b"<html>")  # the identified type wins
    assert is_html(None, "text/html; charset=utf-8", None)
    assert not is_html(None, "image/png", None)
    assert is_html(None, "application/octet-stream", b"\n  <!DOCTYPE html><html>")
    assert not is_html(None, None, b"\x00\x01\x00\x00\x00\x13OTTO")
    assert sniff_html(b"\xef\xbb\xbf<html lang=en>") and not sniff_html(b"<abbr>x")
    assert url_domain("HTTP://User:pw@WWW.Example.COM:8080/a?b") == "example.com"
    assert url_domain("https://www2.example.org./") == "www2.example.org"
    assert url_domain("http://[::1]:80/") == "::1"
    assert url_domain("dns:example.com") is None and url_domain("http://[broken/") is None
    assert parse_warc_date("2024-05-18T01:58:10.123456Z") == datetime(2024, 5, 18, 1, 58, 10, tzinfo=UTC)
    assert parse_warc_date("20080430204825") == datetime(2008, 4, 30, 20, 48, 25, tzinfo=UTC)
    assert parse_warc_date("yesterday") is None


# ------------------------------------------------------------------------------------------------ decode_html


def _aeb_page(realdata: Path, key: str) -> str:
    return gzip.decompress((realdata / "extraction_aeb" / "html" / f"{key}.html.gz").read_bytes()).decode("utf-8")


def _first_page_with(realdata: Path, chars: str) -> str:
    truth = json.loads((realdata / "extraction_aeb" / "ground-truth.json").read_text())
    for key in sorted(truth):
        page = _aeb_page(realdata, key)
        if all(c in page for c in chars):
            return page
    raise AssertionError(f"no AEB page contains {chars!r}")


JAPANESE_PAGE = "f105de6e63ca91ea482f60193f6252092557f969f2fd128ff68c0d4d6b90dd7d"


def test_cp1252_declared_iso_8859_1(realdata: Path) -> None:
    """Curly quotes and dashes are cp1252 bytes 0x91-0x97; read as real latin-1 they would be C1 controls."""
    page = _first_page_with(realdata, "\u2019\u201c")
    original = page.encode("cp1252", "xmlcharrefreplace").decode("cp1252")
    payload = original.replace('charset="utf-8"', 'charset="iso-8859-1"').encode("cp1252")
    text, encoding = decode_html(payload, "text/html; charset=ISO-8859-1")
    assert encoding == "cp1252"
    assert "\u2019" in text and "\x92" not in text
    assert text == payload.decode("cp1252")


def test_shift_jis_declared_and_undeclared(realdata: Path) -> None:
    page = _aeb_page(realdata, JAPANESE_PAGE).replace('<meta charset="UTF-8">', '<meta charset="Shift_JIS">')
    payload = page.encode("cp932", "xmlcharrefreplace")
    expected = payload.decode("cp932")
    assert "Kindle書籍を読む場合は" in expected
    text, encoding = decode_html(payload, "text/html; charset=Shift_JIS")
    assert (text, encoding) == (expected, "cp932")
    text, _ = decode_html(payload, "text/html")  # the <meta> declaration alone
    assert text == expected
    undeclared = payload.replace(b'<meta charset="Shift_JIS">', b"")
    text, encoding = decode_html(undeclared, None)  # detection
    assert "Kindle書籍を読む場合は" in text and encoding.startswith(("cp932", "shift_jis"))


def test_latin1_bytes_declared_utf8(realdata: Path) -> None:
    """A common mislabel: the server and the page say UTF-8, the bytes are latin-1."""
    page = _first_page_with(realdata, "é")
    original = page.encode("latin-1", "xmlcharrefreplace").decode("latin-1")
    payload = original.encode("latin-1")
    text, encoding = decode_html(payload, "text/html; charset=utf-8")
    assert not encoding.endswith(REPLACED)
    words = [w for w in re.findall(r"\w*é\w*", original)][:20]
    assert words and all(w in text for w in words)
    assert "\ufffd" not in text


def test_utf8_declared_latin1_and_other_cases(realdata: Path) -> None:
    page = _aeb_page(realdata, JAPANESE_PAGE)
    payload = page.encode("utf-8")
    assert decode_html(payload, "text/html; charset=iso-8859-1") == (page, "utf-8")  # valid UTF-8 wins
    cut = payload.rfind("を".encode()) + 2  # a clipped payload ends inside a 3-byte character
    assert decode_html(payload[:cut], None) == (payload[: cut - 2].decode("utf-8"), "utf-8")
    assert decode_html(codecs.BOM_UTF16_LE + page.encode("utf-16-le"), None) == (page, "utf-16-le")
    assert decode_html(page.encode("utf-16-be"), "text/html; charset=UTF-16BE") == (page, "utf-16-be")
    assert decode_html(b"", "text/html") == ("", "utf-8")
    text, encoding = decode_html(b"<p>" + os.urandom(5000), "text/html; charset=bogus-charset")
    assert isinstance(text, str) and encoding
