"""Build WARC files of any size from the real pages in ``../shared/realdata`` (tests and benchmarks only).

Common Crawl's layout: a warcinfo record, then per page a request, a response and a metadata record, each its own
gzip member. Pages cycle through the real HTML pages available (extraction benchmarks and the HTML responses of
the real WARC samples); every copy gets its own URL, record ids and a paragraph of real sentences placed before the
page's first paragraph, so no two documents are exact duplicates. The build is deterministic (same arguments, same
bytes). ``single_member=True`` writes the whole file as one gzip member and ``compress=False`` a plain ``.warc``:
the two layouts that cannot be cut at record boundaries.
"""

from __future__ import annotations

import gzip
import hashlib
import html
import random
import re
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from fastwarc.warc import ArchiveIterator, WarcRecordType

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
_HTTP_HEAD = (
    "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {length}\r\n"
    "Server: nginx\r\nConnection: close\r\n\r\n"
)


@dataclass(frozen=True)
class BuiltWarc:
    path: Path
    pages: int
    """HTML responses written (each a candidate document)."""
    response_ids: list[str]


def real_pages() -> list[bytes]:
    """Every real HTML page in ``../shared/realdata``, as bytes, in a fixed order."""
    pages: list[bytes] = []
    for folder in ("extraction_aeb/html", "extraction_trafilatura_eval/html"):
        pages += [gzip.decompress(p.read_bytes()) for p in sorted((REALDATA / folder).glob("*.gz"))]
    readability = sorted((REALDATA / "extraction_readability").glob("*/source.html.gz"))
    pages += [gzip.decompress(p.read_bytes()) for p in readability]
    for warc in sorted((REALDATA / "warc_samples").glob("*.warc.gz")):
        if "whirlwind" in warc.name or "clipped" in warc.name:
            continue
        with open(warc, "rb") as f:
            for record in ArchiveIterator(f, record_types=WarcRecordType.response, parse_http=True):
                if record.http_headers is None:
                    continue
                content_type = record.http_headers.get("Content-Type") or ""
                if record.http_headers.status_code == 200 and "html" in content_type.lower():
                    payload = record.reader.read()
                    if b"<p" in payload.lower() and len(payload) > 2000:
                        pages.append(payload)
    return pages


def _sentences() -> list[str]:
    text = (REALDATA / "langid_lingua" / "sentences" / "en.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def _record_id(*key: object) -> str:
    digest = hashlib.sha256("|".join(map(str, key)).encode()).digest()
    return f"<urn:uuid:{uuid.UUID(bytes=digest[:16], version=4)}>"


def _record(headers: dict[str, str], block: bytes) -> bytes:
    head = "WARC/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode() + f"Content-Length: {len(block)}\r\n\r\n".encode() + block + b"\r\n\r\n"


def _vary(page: bytes, paragraph: str, title: str) -> bytes:
    """``page`` with a paragraph of its own before the first ``<p``, and its title made unique."""
    marker = page.lower().find(b"<p")
    insert = f"<p>{html.escape(paragraph)}</p>\n".encode()
    if marker >= 0:
        page = page[:marker] + insert + page[marker:]
    end_title = page.lower().find(b"</title>")
    if end_title >= 0:
        page = page[:end_title] + f" - {html.escape(title)}".encode() + page[end_title:]
    return page


def _records(pages: int, seed: int, name: str, max_page_bytes: int | None) -> Iterator[tuple[bytes, str | None]]:
    """(record bytes, response id or None) in file order."""
    sources = [p for p in real_pages() if max_page_bytes is None or len(p) <= max_page_bytes]
    sentences = _sentences()
    rng = random.Random(seed)
    info = b"isPartOf: CC-MAIN-2024-22\r\nsoftware: cc-refinery test WARC builder\r\n"
    info_id = _record_id(name, seed, "warcinfo")
    yield _record({"WARC-Type": "warcinfo", "WARC-Date": "2024-05-20T00:00:00Z", "WARC-Record-ID": info_id,
                   "WARC-Filename": name, "Content-Type": "application/warc-fields"}, info), None  # fmt: skip
    for n in range(pages):
        url = f"https://site{n % 997}.example.org/{name}/{seed}/page-{n}.html"
        body = _vary(sources[n % len(sources)], " ".join(rng.sample(sentences, 6)), f"{seed}-{n}")
        block = _HTTP_HEAD.format(length=len(body)).encode() + body
        date = f"2024-05-20T{n // 3600 % 24:02d}:{n // 60 % 60:02d}:{n % 60:02d}Z"
        req_id, resp_id, meta_id = (_record_id(name, seed, n, kind) for kind in ("request", "response", "metadata"))
        common = {"WARC-Date": date, "WARC-Warcinfo-ID": info_id, "WARC-Target-URI": url}
        request = f"GET /{name}/page-{n}.html HTTP/1.1\r\nHost: site{n % 997}.example.org\r\n\r\n".encode()
        yield _record({"WARC-Type": "request", "WARC-Record-ID": req_id, **common,
                       "Content-Type": "application/http; msgtype=request"}, request), None  # fmt: skip
        yield _record({"WARC-Type": "response", "WARC-Record-ID": resp_id, "WARC-Concurrent-To": req_id, **common,
                       "Content-Type": "application/http; msgtype=response",
                       "WARC-Identified-Payload-Type": "text/html"}, block), resp_id  # fmt: skip
        yield _record({"WARC-Type": "metadata", "WARC-Record-ID": meta_id, "WARC-Concurrent-To": resp_id, **common,
                       "Content-Type": "application/warc-fields"}, b"fetchTimeMs: 120\r\n"), None  # fmt: skip


def build_warc(
    path: Path,
    pages: int,
    *,
    seed: int = 0,
    single_member: bool = False,
    compress: bool = True,
    level: int = 6,
    max_page_bytes: int | None = None,
) -> BuiltWarc:
    """Write a WARC of ``pages`` HTML responses (3 records each, plus warcinfo) to ``path``; ``max_page_bytes``
    uses only the real pages up to that size (cheaper to extract, for tests)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = []
    with open(path, "wb") as out:
        whole = zlib.compressobj(level, zlib.DEFLATED, 31) if single_member else None
        for data, resp_id in _records(pages, seed, path.name, max_page_bytes):
            if resp_id:
                ids.append(resp_id)
            if not compress:
                out.write(data)
            elif whole is not None:
                out.write(whole.compress(data))
            else:
                member = zlib.compressobj(level, zlib.DEFLATED, 31)
                out.write(member.compress(data) + member.flush())
        if whole is not None:
            out.write(whole.flush())
    return BuiltWarc(path=path, pages=pages, response_ids=ids)


# --------------------------------------------------------------------------------------------- a language mix

MIX_LANGUAGE_WEIGHTS: dict[str, float] = {
    "ru": 6.0, "de": 5.5, "ja": 5.0, "zh": 5.0, "es": 4.5, "fr": 4.3, "it": 2.5, "pt": 2.1, "nl": 1.9, "pl": 1.8,
    "cs": 1.0, "vi": 1.0, "id": 0.9, "tr": 0.9, "sv": 0.7, "fa": 0.7, "ko": 0.7, "ar": 0.6, "hu": 0.5, "el": 0.5,
    "ro": 0.5, "da": 0.5, "fi": 0.4, "th": 0.4, "sk": 0.4, "uk": 0.4, "nb": 0.4, "bg": 0.3, "ca": 0.2, "hr": 0.2,
    "he": 0.2, "lt": 0.2, "sl": 0.2, "sr": 0.1, "hi": 0.1, "et": 0.1, "lv": 0.1, "bn": 0.1, "ms": 0.1, "ta": 0.1,
}  # fmt: skip
"""Relative page shares of the non-English languages in the mix: roughly the order and proportions of Common
Crawl's published per-language page counts (the largest languages). Every other language of the lingua set gets
:data:`MIX_OTHER_WEIGHT`, so the long tail is there too."""
MIX_OTHER_WEIGHT = 0.05

_PARAGRAPH = re.compile(rb"(<p\b[^>]*>)(.*?)(</p\s*>)", re.IGNORECASE | re.DOTALL)
_HEADING = re.compile(rb"(<(?:h1|title)\b[^>]*>)(.*?)(</(?:h1|title)\s*>)", re.IGNORECASE | re.DOTALL)
_TAGS = re.compile(rb"<[^>]+>")


def lingua_sentences(code: str) -> list[str]:
    """The real sentences of one language in the lingua test set (``langid_lingua/sentences/<code>.txt``)."""
    text = (REALDATA / "langid_lingua" / "sentences" / f"{code}.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def lingua_languages() -> list[str]:
    """Every language code of the lingua test set, sorted."""
    return sorted(p.stem for p in (REALDATA / "langid_lingua" / "sentences").glob("*.txt"))


def paragraph_texts(page: bytes) -> list[str]:
    """The text of each ``<p>`` element of ``page`` (tags stripped, entities decoded)."""
    found = (html.unescape(_TAGS.sub(b" ", m.group(2)).decode("utf-8", "replace")) for m in _PARAGRAPH.finditer(page))
    return [" ".join(t.split()) for t in found]


def localize(page: bytes, sentences: list[str], rng: random.Random) -> bytes:
    """``page`` (a real template) with the content of every ``<p>``, ``<h1>`` and ``<title>`` element replaced by
    one to three of ``sentences``: another language's text in the main-text area, the page's markup, navigation
    and other boilerplate left as they were."""

    def fill(match: re.Match[bytes]) -> bytes:
        text = " ".join(rng.sample(sentences, rng.randint(1, 3)))
        return match.group(1) + html.escape(text).encode() + match.group(3)

    return _HEADING.sub(fill, _PARAGRAPH.sub(fill, page))


def mix_templates(pages: list[bytes], is_english: Callable[[str], bool], min_paragraphs: int = 3) -> list[bytes]:
    """The pages fit to carry another language: English by ``is_english`` on their paragraph text, with at least
    ``min_paragraphs`` paragraphs of 40 characters or more."""
    templates = []
    for page in pages:
        texts = [t for t in paragraph_texts(page) if len(t) >= 40]
        if len(texts) >= min_paragraphs and is_english(" ".join(texts)):
            templates.append(page)
    return templates


def mix_languages(count: int, seed: int = 0) -> list[str]:
    """``count`` non-English language codes drawn by :data:`MIX_LANGUAGE_WEIGHTS` (the rest of the lingua set at
    :data:`MIX_OTHER_WEIGHT`), deterministic for a seed."""
    codes = [c for c in lingua_languages() if c != "en"]
    weights = [MIX_LANGUAGE_WEIGHTS.get(c, MIX_OTHER_WEIGHT) for c in codes]
    return random.Random(seed).choices(codes, weights, k=count)


def build_pages_warc(path: Path, pages: list[bytes], *, seed: int = 0, level: int = 6) -> BuiltWarc:
    """Write ``pages`` as a Common Crawl-like WARC (warcinfo, then request, response, metadata per page, one gzip
    member per record), each page under its own URL."""
    path.parent.mkdir(parents=True, exist_ok=True)
    name = path.name
    info_id = _record_id(name, seed, "warcinfo")
    info = b"isPartOf: CC-MAIN-2024-22\r\nsoftware: cc-refinery test WARC builder\r\n"
    records = [_record({"WARC-Type": "warcinfo", "WARC-Date": "2024-05-20T00:00:00Z", "WARC-Record-ID": info_id,
                        "WARC-Filename": name, "Content-Type": "application/warc-fields"}, info)]  # fmt: skip
    ids = []
    http = "application/http; msgtype="
    for n, body in enumerate(pages):
        host = f"site{n % 997}.example.{('org', 'net', 'com')[n % 3]}"
        date = f"2024-05-20T{n // 3600 % 24:02d}:{n // 60 % 60:02d}:{n % 60:02d}Z"
        url = f"https://{host}/{name}/{seed}/page-{n}.html"
        common = {"WARC-Date": date, "WARC-Warcinfo-ID": info_id, "WARC-Target-URI": url}
        req_id, resp_id, meta_id = (_record_id(name, seed, n, kind) for kind in ("request", "response", "metadata"))
        block = _HTTP_HEAD.format(length=len(body)).encode() + body
        request = f"GET /{name}/{seed}/page-{n}.html HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        records += [
            _record({"WARC-Type": "request", "WARC-Record-ID": req_id, **common, "Content-Type": http + "request"},
                    request),
            _record({"WARC-Type": "response", "WARC-Record-ID": resp_id, "WARC-Concurrent-To": req_id, **common,
                     "Content-Type": http + "response", "WARC-Identified-Payload-Type": "text/html"}, block),
            _record({"WARC-Type": "metadata", "WARC-Record-ID": meta_id, "WARC-Concurrent-To": resp_id, **common,
                     "Content-Type": "application/warc-fields"}, b"fetchTimeMs: 120\r\n"),
        ]  # fmt: skip
        ids.append(resp_id)
    with open(path, "wb") as out:
        for data in records:
            member = zlib.compressobj(level, zlib.DEFLATED, 31)
            out.write(member.compress(data) + member.flush())
    return BuiltWarc(path=path, pages=len(pages), response_ids=ids)
