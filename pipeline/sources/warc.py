"""Read WARC files into Arrow batches of decoded HTML pages (``RAW_SCHEMA``).

FastWARC parses the records (measured 2.3x the records/s of warcio with the same record selection on the
real samples, see ``bench/bench_warc_readers.py``). Real crawl files are not always whole: a download can be cut off, a
record can be corrupt. FastWARC stops silently at a cut and raises on a corrupt gzip member, so after
it stops we walk the remaining gzip members ourselves: a complete member after the stop point means
a broken record (counted, skipped, reading resumes after it); an incomplete one means a truncated file
(counted, logged). Every outcome is a counter in ``counters``, the iterator never raises on bad input.
A cut file still yields every record that ends before the cut (and the one at the cut as a partial
page): that is what lets a WARC file truncated at the source commit its part with the salvaged records.

Counter keys: ``records`` (all WARC records), ``responses``, ``skipped_non_response``,
``skipped_non_http`` (e.g. ``dns:`` records), ``skipped_non_html``, ``html`` (HTML responses, any
status), ``skipped_http_status`` (HTML, status != 200), ``skipped_content_encoding`` (undecodable
``Content-Encoding``), ``documents`` (rows yielded), ``broken_record``, ``truncated_record`` (a
payload shorter than its Content-Length, still yielded: the page prefix is kept, as Common Crawl
keeps its own truncated payloads), ``truncated_file``, ``payload_capped``, ``decode_fallback``
(bytes replaced while decoding), ``decode_detected`` (charset guessed by detection), ``missing_url``.
"""

from __future__ import annotations

import codecs
import io
import logging
import os
import re
import sys
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import urlsplit

import pyarrow as pa
from fastwarc.stream_io import BrotliReader, ZstdReader
from fastwarc.warc import ArchiveIterator, WarcRecord, WarcRecordType

from pipeline.core.schema import RAW_SCHEMA, document_id

log = logging.getLogger(__name__)

HTML_TYPES = frozenset({"text/html", "application/xhtml+xml", "application/vnd.wap.xhtml+xml"})
"""Media types we extract text from."""

_UNKNOWN_TYPES = frozenset(
    {"", "application/octet-stream", "binary/octet-stream", "application/unknown", "unknown/unknown", "*/*"}
)
MAX_PAYLOAD_BYTES = 64 << 20
"""Read at most this much of one payload; bigger pages are far above any extraction limit anyway."""
BATCH_HTML_BYTES = 32 << 20
"""Flush a batch early when its decoded HTML (Python strings, up to 4 bytes a character) reaches this size: every
stage's working memory grows with the batch, so this, not the page count, bounds a worker's peak memory."""
_SNIFF_BYTES = 1024
_META_SCAN_BYTES = 2048
_DETECT_WINDOW = 32 << 10
_GZIP_MAGIC = b"\x1f\x8b\x08"
_READ_CHUNK = 1 << 20
_MAX_WARNINGS = 5


# ---------------------------------------------------------------------------------------------------------------
# Record selection: pure functions, shared with the warcio reader of the benchmark so both select the same records.


def media_type(content_type: str | None) -> str:
    """``"Text/HTML; charset=x"`` -> ``"text/html"``; missing -> ``""``."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


_SNIFF_TAGS = (
    b"<!doctype html",
    b"<html",
    b"<head",
    b"<body",
    b"<script",
    b"<iframe",
    b"<h1",
    b"<div",
    b"<font",
    b"<table",
    b"<a",
    b"<style",
    b"<title",
    b"<b",
    b"<br",
    b"<p",
    b"<!--",
    b"<meta",
)


def sniff_html(head: bytes) -> bool:
    """WHATWG-style sniffing: the first non-blank bytes open an HTML tag (followed by space or ``>``)."""
    for bom in (codecs.BOM_UTF8,):
        if head.startswith(bom):
            head = head[len(bom) :]
    start = head.lstrip(b" \t\r\n\x0c")[:32].lower()
    for tag in _SNIFF_TAGS:
        if start.startswith(tag):
            if tag == b"<!--":
                return True
            nxt = start[len(tag) : len(tag) + 1]
            if nxt in (b" ", b">", b"\t", b"\n", b"\r", b"\x0c", b"/"):
                return True
    return False


def is_html(identified_type: str | None, http_content_type: str | None, head: bytes | None) -> bool:
    """Decide on the most reliable signal known: the crawler's identified type, then HTTP, then the bytes.

    Common Crawl's ``WARC-Identified-Payload-Type`` is sniffed from the content, so it wins over the server's
    ``Content-Type``; only when neither names a real type (missing, ``application/octet-stream``) do we sniff.
    """
    for declared in (media_type(identified_type), media_type(http_content_type)):
        if declared not in _UNKNOWN_TYPES:
            return declared in HTML_TYPES
    return head is not None and sniff_html(head)


def url_domain(url: str | None) -> str | None:
    """Host of ``url``: lowercased, no port, no userinfo, no trailing dot, no leading ``www.``."""
    if not url:
        return None
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    if not host:
        return None
    host = host.rstrip(".")
    if host.startswith("www."):
        host = host[4:]
    return host or None


def parse_warc_date(value: str | None) -> datetime | None:
    """``WARC-Date`` (ISO 8601, WARC 1.1 fractions allowed, or 14-digit ARC style) as UTC, seconds precision."""
    if not value:
        return None
    value = value.strip()
    try:
        if len(value) == 14 and value.isdigit():
            parsed = datetime.strptime(value, "%Y%m%d%H%M%S")
        else:
            parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).replace(microsecond=0)


def clean_url(value: str | None) -> str | None:
    """``WARC-Target-URI`` without whitespace or the angle brackets some writers add (WARC 1.1 errata)."""
    if not value:
        return None
    value = value.strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1].strip()
    return value or None


def dechunk(data: bytes) -> bytes | None:
    """Undo HTTP chunked transfer encoding; None if ``data`` is not chunked (some writers keep the header)."""
    out = []
    pos = 0
    size_total = len(data)
    while True:
        eol = data.find(b"\r\n", pos, pos + 256)
        if eol < 0:
            eol = data.find(b"\n", pos, pos + 256)
            if eol < 0:
                return b"".join(out) if out else None  # cut off inside a chunk header: keep what we have
        line = data[pos:eol].split(b";", 1)[0].strip()
        try:
            size = int(line, 16)
        except ValueError:
            return b"".join(out) if out and pos >= size_total else None
        start = eol + (2 if data[eol : eol + 2] == b"\r\n" else 1)
        if size == 0:
            return b"".join(out)
        out.append(data[start : start + size])
        pos = start + size
        if pos >= size_total:
            return b"".join(out)  # truncated inside the last chunk
        if data[pos : pos + 2] == b"\r\n":
            pos += 2
        elif data[pos : pos + 1] == b"\n":
            pos += 1


def decode_content(data: bytes, encoding: str) -> bytes | None:
    """Undo ``Content-Encoding`` (gzip, deflate, br, zstd); None when the bytes do not decode."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity", "none"):
        return data
    try:
        if encoding in ("gzip", "x-gzip"):
            return zlib.decompressobj(wbits=47).decompress(data)
        if encoding == "deflate":
            try:
                return zlib.decompressobj().decompress(data)
            except zlib.error:
                return zlib.decompressobj(wbits=-15).decompress(data)
        if encoding == "br":
            return BrotliReader(io.BytesIO(data)).read()
        if encoding == "zstd":
            return ZstdReader(io.BytesIO(data)).read()
    except (zlib.error, OSError, ValueError):
        return None
    return None


# ---------------------------------------------------------------------------------------------------------------
# Charset decoding.

# WHATWG Encoding Standard label mapping where it differs from Python's codec of the same name: browsers decode
# "iso-8859-1"/"ascii" as windows-1252, "gb2312" as gb18030, "shift_jis" as windows-31j, and so must we.
_LABELS = {
    **dict.fromkeys(
        [
            "iso-8859-1",
            "iso8859-1",
            "iso_8859-1",
            "iso88591",
            "latin1",
            "latin-1",
            "l1",
            "cp819",
            "ibm819",
            "iso-ir-100",
            "csisolatin1",
            "us-ascii",
            "ascii",
            "ansi_x3.4-1968",
            "windows-1252",
            "x-cp1252",
            "cp1252",
        ],
        "cp1252",
    ),
    **dict.fromkeys(["iso-8859-9", "iso8859-9", "latin5", "l5", "windows-1254", "cp1254"], "cp1254"),
    **dict.fromkeys(["tis-620", "iso-8859-11", "windows-874", "dos-874", "cp874"], "cp874"),
    **dict.fromkeys(["gb2312", "gbk", "x-gbk", "gb_2312-80", "chinese", "csgb2312", "cp936", "gb18030"], "gb18030"),
    **dict.fromkeys(
        ["shift_jis", "shift-jis", "sjis", "x-sjis", "ms_kanji", "ms932", "windows-31j", "csshiftjis", "cp932"],
        "cp932",
    ),
    **dict.fromkeys(["euc-kr", "ks_c_5601-1987", "korean", "windows-949", "cp949", "csksc56011987"], "cp949"),
    **dict.fromkeys(["big5", "big5-hkscs", "cn-big5", "x-x-big5", "csbig5"], "big5hkscs"),
    **dict.fromkeys(
        ["utf8", "utf-8", "unicode-1-1-utf-8", "unicode11utf8", "unicode20utf8", "x-unicode20utf8"], "utf-8"
    ),
    **dict.fromkeys(["utf-16", "utf-16le", "unicode", "ucs-2", "csunicode", "iso-10646-ucs-2"], "utf-16-le"),
    "utf-16be": "utf-16-be",
    "macintosh": "mac-roman",
    "x-mac-roman": "mac-roman",
}
_REJECTED_CODECS = frozenset({"utf-7"})  # browsers refuse it; decoding it only helps script injection

_HTTP_CHARSET_RE = re.compile(r"charset\s*=\s*[\"']?\s*([^\s;\"',]+)", re.IGNORECASE)
_META_CHARSET_RE = re.compile(rb"<meta[^>]{0,512}?charset\s*=\s*[\"']?\s*([a-zA-Z0-9_:.+-]{1,40})", re.IGNORECASE)
_XML_ENCODING_RE = re.compile(rb"<\?xml[^>]{0,200}?encoding\s*=\s*[\"']([a-zA-Z0-9_:.+-]{1,40})", re.IGNORECASE)
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_NON_ASCII_RE = re.compile(rb"[\x80-\xff]")
REPLACED = ":replace"
"""Suffix of the encoding ``decode_html`` returns when it had to replace undecodable bytes."""
DETECTED = ":detected"
"""Suffix of the encoding ``decode_html`` returns when the charset came from detection."""


def normalize_charset(label: str | None) -> str | None:
    """A charset label as a Python text codec name (WHATWG mapping first); None if unknown or not text."""
    if not label:
        return None
    label = label.strip().strip("\"'").strip().lower()
    if not label:
        return None
    if label in _LABELS:
        return _LABELS[label]
    try:
        info = codecs.lookup(label)
    except (LookupError, ValueError):
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name in _REJECTED_CODECS:
        return None
    return _LABELS.get(info.name, info.name)


def http_charset(content_type: str | None) -> str | None:
    """The charset parameter of an HTTP ``Content-Type``, normalized."""
    if not content_type:
        return None
    match = _HTTP_CHARSET_RE.search(content_type)
    return normalize_charset(match.group(1)) if match else None


def meta_charset(payload: bytes) -> str | None:
    """``<meta charset>``, ``<meta http-equiv content="...charset=">`` or the XML declaration, first ~2 KB."""
    head = payload[:_META_SCAN_BYTES]
    match = _META_CHARSET_RE.search(head) or _XML_ENCODING_RE.search(head)
    if not match:
        return None
    charset = normalize_charset(match.group(1).decode("ascii", "ignore"))
    if charset and charset.startswith(("utf-16", "utf-32")):
        return "utf-8"  # an ASCII-readable declaration cannot be UTF-16 (WHATWG prescan rule)
    return charset


def _detect(payload: bytes) -> str | None:
    """Guess the charset from a window around the first non-ASCII byte, cut at safe ASCII boundaries."""
    from charset_normalizer import from_bytes

    first = _NON_ASCII_RE.search(payload)
    if first is None:
        return None
    start = max(payload.rfind(b">", 0, first.start()), payload.rfind(b"\n", 0, first.start()), 0)
    stop = start + _DETECT_WINDOW
    if stop < len(payload):
        # '<' and '\n' are never trail bytes of a multi-byte legacy encoding: cutting there splits no character
        stop = max(payload.rfind(b"<", start, stop), payload.rfind(b"\n", start, stop), start + 1)
    best = from_bytes(payload[start:stop]).best()
    return normalize_charset(best.encoding) if best is not None else None


def _mostly_utf8(payload: bytes) -> str | None:
    """Decode as UTF-8 with replacement when valid multi-byte sequences far outnumber bad bytes.

    A UTF-8 page with a few stray legacy bytes (an ad snippet, a broken template) is still UTF-8; a legacy page
    practically never forms valid multi-byte UTF-8 sequences, so a detector would only produce mojibake here.
    """
    text = payload.decode("utf-8", "replace")
    bad = text.count("\ufffd")
    non_ascii = len(text) - len(text.encode("ascii", "ignore"))
    good = non_ascii - bad
    return text if good >= 4 * bad and good >= 4 else None


def decode_html(payload: bytes, content_type: str | None) -> tuple[str, str]:
    """Decode an HTML payload; return ``(text, encoding_used)``. Never raises.

    Order: BOM, HTTP charset if UTF-16/32, strict UTF-8, mostly-UTF-8, HTTP charset, ``<meta>`` charset, detection,
    then the best guess with ``errors="replace"`` (encoding suffixed with ``:replace``). Strict UTF-8 comes before
    a declared legacy charset because valid non-ASCII UTF-8 is never an accident, while UTF-8 pages served as
    ``iso-8859-1`` are common; a declared charset must decode strictly to be used (latin-1 bytes declared UTF-8
    fall through to detection). Declared ``iso-8859-1`` decodes as windows-1252, as browsers do.
    """
    if not payload:
        return "", "utf-8"
    for bom, encoding in _BOMS:
        if payload.startswith(bom):
            try:
                return payload[len(bom) :].decode(encoding), encoding
            except UnicodeDecodeError:
                return payload[len(bom) :].decode(encoding, "replace"), encoding + REPLACED
    from_http = http_charset(content_type)
    if from_http and from_http.startswith(("utf-16", "utf-32")):
        try:
            return payload.decode(from_http), from_http
        except UnicodeDecodeError:
            pass
    try:
        return payload.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as err:
        if err.reason == "unexpected end of data" and err.end == len(payload):
            # a clipped payload cut inside the last character: drop the partial character
            try:
                return payload[: err.start].decode("utf-8"), "utf-8"
            except UnicodeDecodeError:
                pass
    declared = [c for c in (from_http, meta_charset(payload)) if c and c != "utf-8"]
    if from_http == "utf-8" or not declared:
        mostly = _mostly_utf8(payload)
        if mostly is not None:
            return mostly, "utf-8" + REPLACED
    for encoding in declared:
        try:
            return payload.decode(encoding), encoding
        except (UnicodeDecodeError, LookupError):
            continue
    detected = _detect(payload)
    if detected and detected != "utf-8":
        try:
            return payload.decode(detected), detected + DETECTED
        except (UnicodeDecodeError, LookupError):
            pass
    mostly = _mostly_utf8(payload)
    if mostly is not None:
        return mostly, "utf-8" + REPLACED
    fallback = next(iter(declared), None) or detected or "cp1252"
    try:
        return payload.decode(fallback, "replace"), fallback + REPLACED
    except LookupError:
        return payload.decode("cp1252", "replace"), "cp1252" + REPLACED


# ---------------------------------------------------------------------------------------------------------------
# Reading.


@dataclass
class HtmlRecord:
    """One selected HTML response, before decoding."""

    record_id: str
    url: str | None
    date: str | None
    content_type: str | None
    payload: bytes
    complete: bool


class _Scan:
    """Per-file reading state: the counters and a cap on repeated warnings."""

    def __init__(self, label: str, counters: Counter[str]) -> None:
        self.label = label
        self.counters = counters
        self.warnings = 0

    def warn(self, msg: str, *args: object) -> None:
        if self.warnings < _MAX_WARNINGS:
            log.warning("%s: " + msg, self.label, *args)
        self.warnings += 1


def _member_status(f: BinaryIO, start: int) -> tuple[str, int]:
    """Decompress the gzip member at ``start``: ("ok", next offset) | ("truncated", -1) | ("corrupt", -1)."""
    f.seek(start)
    decomp = zlib.decompressobj(wbits=31)
    fed = 0
    while True:
        chunk = f.read(_READ_CHUNK)
        if not chunk:
            return "truncated", -1
        try:
            decomp.decompress(chunk, 0)
        except zlib.error:
            return "corrupt", -1
        if decomp.eof:
            return "ok", start + fed + len(chunk) - len(decomp.unused_data)
        fed += len(chunk)


def _find(f: BinaryIO, needle: bytes, start: int) -> int | None:
    """Offset of the next ``needle`` at or after ``start``, or None."""
    f.seek(start)
    offset = start
    tail = b""
    while True:
        chunk = f.read(_READ_CHUNK)
        if not chunk:
            return None
        buf = tail + chunk
        hit = buf.find(needle)
        if hit >= 0:
            return offset - len(tail) + hit
        tail = buf[-(len(needle) - 1) :]
        offset += len(chunk)


_CONTENT_LENGTH_RE = re.compile(rb"^content-length:[ \t]*(\d+)", re.IGNORECASE | re.MULTILINE)


def _plain_record_complete(f: BinaryIO, start: int, size: int) -> bool:
    """Whether the uncompressed record at ``start`` ends within the file (its Content-Length fits)."""
    f.seek(start)
    head = f.read(64 << 10)
    end = head.find(b"\r\n\r\n")
    if end < 0:
        return False
    match = _CONTENT_LENGTH_RE.search(head, 0, end)
    return match is None or start + end + 4 + int(match.group(1)) <= size


def _select(record: WarcRecord, scan: _Scan) -> HtmlRecord | None:
    """Apply the record selection to one FastWARC record; count why it is skipped."""
    counters = scan.counters
    if record.record_type != WarcRecordType.response:
        counters["skipped_non_response"] += 1
        return None
    counters["responses"] += 1
    if not record.is_http:
        counters["skipped_non_http"] += 1
        return None
    record.parse_http()
    headers = record.headers
    http = record.http_headers
    content_type = http.get("Content-Type")
    head = None
    identified = headers.get("WARC-Identified-Payload-Type")
    if media_type(identified) in _UNKNOWN_TYPES and media_type(content_type) in _UNKNOWN_TYPES:
        head = record.reader.read(_SNIFF_BYTES)
    if not is_html(identified, content_type, head):
        counters["skipped_non_html"] += 1
        return None
    counters["html"] += 1
    if http.status_code != 200:
        counters["skipped_http_status"] += 1
        return None
    payload = record.reader.read(MAX_PAYLOAD_BYTES + 1 - (len(head) if head else 0))
    if head:
        payload = head + payload
    expected = record.content_length
    complete = len(payload) >= expected
    if len(payload) > MAX_PAYLOAD_BYTES:
        counters["payload_capped"] += 1
        payload = payload[:MAX_PAYLOAD_BYTES]
        complete = True
    if not complete:
        counters["truncated_record"] += 1
        scan.warn(
            "record %s is cut short (%d of %d payload bytes)", headers.get("WARC-Target-URI"), len(payload), expected
        )
    transfer = (http.get("Transfer-Encoding") or "").lower()
    if "chunked" in transfer:
        payload = dechunk(payload) or payload
    encoding = http.get("Content-Encoding")
    if encoding:
        decoded = decode_content(payload, encoding)
        if decoded is None:
            counters["skipped_content_encoding"] += 1
            return None
        payload = decoded
    return HtmlRecord(
        record_id=headers.get("WARC-Record-ID") or "",
        url=clean_url(headers.get("WARC-Target-URI")),
        date=headers.get("WARC-Date"),
        content_type=content_type,
        payload=payload,
        complete=complete,
    )


@dataclass(frozen=True)
class ChunkEnd:
    """Between two chunks of a file: the next chunk starts with the record at byte ``offset``."""

    offset: int


class RemoteFile(Protocol):
    """A WARC file that is not on local disk but can be opened like one (``pipeline.sources.stream.RemoteWarc``)."""

    size: int
    head: bytes
    """The first bytes of the file."""

    def read_range(self, start: int, end: int) -> bytes: ...

    def open(self) -> BinaryIO: ...


WarcFile = Path | RemoteFile
"""What the reader reads: a local path, or a remote file read by ranges."""


def open_warc(path: WarcFile) -> tuple[BinaryIO, int]:
    """An open binary file and its size."""
    if isinstance(path, str | Path):
        f = open(path, "rb")  # noqa: SIM115 - the caller closes it
        return f, os.fstat(f.fileno()).st_size
    return path.open(), path.size


def iter_html_records(
    path: WarcFile,
    counters: Counter[str],
    label: str | None = None,
    *,
    start: int = 0,
    end: int | None = None,
    chunk_size: int | None = None,
) -> Iterator[HtmlRecord | ChunkEnd]:
    """Every selected HTML response of one WARC file, surviving broken records and cut-off files.

    Reads the records that start in ``[start, end)`` (``start`` must be a record boundary). With ``chunk_size``,
    a :class:`ChunkEnd` comes before the first record after every ``chunk_size`` responses yielded, before that
    record is counted: ``counters`` up to a ``ChunkEnd`` are exactly the chunk's.
    """
    scan = _Scan(label or str(path), counters)
    try:
        f, size = open_warc(path)
    except OSError as err:
        counters["unreadable_file"] += 1
        log.error("%s: cannot open: %s", scan.label, err)
        return
    try:
        gzipped = (f.read(2) if isinstance(path, str | Path) else path.head[:2]) == b"\x1f\x8b"
        limit = size if end is None else min(size, end)
        pos = start
        resyncing = False
        in_chunk = 0
        while pos < limit:
            f.seek(pos)
            last_start: int | None = None
            failed_start: int | None = None
            error: Exception | None = None
            try:
                for record in ArchiveIterator(f, parse_http=False):
                    if end is not None and record.stream_pos >= end:
                        return  # (only per-record gzip and plain files have ranges: offsets are file offsets)
                    if chunk_size and in_chunk >= chunk_size:
                        yield ChunkEnd(record.stream_pos)
                        in_chunk = 0
                    last_start = record.stream_pos
                    counters["records"] += 1
                    resyncing = False
                    try:
                        selected = _select(record, scan)
                    except Exception as err:  # a malformed record must not end the file
                        counters["broken_record"] += 1
                        failed_start = last_start
                        scan.warn("broken record at offset %d: %r", last_start, err)
                        continue
                    if selected is not None:
                        in_chunk += 1
                        yield selected
            except Exception as err:
                error = err
            pos = _resume_point(f, size, gzipped, pos, last_start, failed_start, error, resyncing, scan)
            if pos < 0:
                break
            resyncing = True
    finally:
        f.close()


PER_RECORD_GZIP = "per_record_gzip"
SINGLE_GZIP = "single_gzip"
PLAIN = "plain"


def _pieces(path: WarcFile, size: int = 64 << 10) -> Iterator[bytes]:
    """The file's bytes from the start, ``size`` at a time: a remote file by small range reads, not whole blocks."""
    if isinstance(path, str | Path):
        with open(path, "rb") as f:
            while data := f.read(size):
                yield data
        return
    for start in range(0, path.size, size):
        yield path.read_range(start, min(path.size, start + size))


def warc_layout(path: WarcFile) -> str:
    """How a WARC file is compressed: one gzip member per record (Common Crawl's layout, which can be read from
    any record's offset), one gzip member holding many records, or no gzip at all.

    Looks only at the first member: it is per-record when it holds no more than its first record.
    """
    decomp = zlib.decompressobj(wbits=31)
    head = b""
    out_bytes = 0
    record_end: int | None = None
    for data in _pieces(path):
        if not out_bytes and not head and data[:2] != b"\x1f\x8b":
            return PLAIN
        try:
            out = decomp.decompress(data)
        except zlib.error:
            return SINGLE_GZIP  # unreadable first member: read it whole, from the start
        out_bytes += len(out)
        if record_end is None:
            head += out
            header_end = head.find(b"\r\n\r\n")
            if header_end >= 0:
                match = _CONTENT_LENGTH_RE.search(head, 0, header_end)
                record_end = header_end + 4 + (int(match.group(1)) if match else 0) + 4
        if record_end is not None and out_bytes > record_end + 2:
            return SINGLE_GZIP  # a second record follows the first inside the same member
        if decomp.eof:
            return PER_RECORD_GZIP
    return PER_RECORD_GZIP  # a file cut inside its first member: nothing after it to read anyway


def sync_to_record(path: WarcFile, offset: int) -> int | None:
    """The first record boundary at or after ``offset`` in a per-record gzip WARC: a gzip member that begins with
    a WARC header. None when no record starts after ``offset``."""
    f, _ = open_warc(path)
    with f:
        at = offset
        while True:
            found = _find(f, _GZIP_MAGIC, at)
            if found is None:
                return None
            f.seek(found)
            try:
                head = zlib.decompressobj(wbits=31).decompress(f.read(4096), 16)
            except zlib.error:
                head = b""
            if head.startswith(b"WARC/"):
                return found
            at = found + 1


def _resume_point(
    f: BinaryIO,
    size: int,
    gzipped: bool,
    pos: int,
    last_start: int | None,
    failed_start: int | None,
    error: Exception | None,
    resyncing: bool,
    scan: _Scan,
) -> int:
    """Where to continue after FastWARC stopped (cleanly or not); -1 when the file is done."""
    counters = scan.counters
    if not gzipped:
        if error is None:
            if last_start is not None and not _plain_record_complete(f, last_start, size):
                counters["truncated_file"] += 1
                scan.warn("file is truncated: the record at offset %d is cut off", last_start)
            return -1
        counted = failed_start is not None and failed_start == last_start
        if not counted and not (resyncing and last_start is None):
            counters["broken_record"] += 1
            scan.warn("unreadable data after offset %d: %r", last_start if last_start is not None else pos, error)
        nxt = _find(f, b"WARC/", (last_start if last_start is not None else pos) + 1)
        return nxt if nxt is not None else -1
    start = last_start if last_start is not None else pos
    already_counted = failed_start is not None and failed_start == start
    first = last_start is not None  # the member at ``start`` held a record FastWARC already handed us
    while start < size:
        status, nxt = _member_status(f, start)
        if status == "truncated":
            counters["truncated_file"] += 1
            scan.warn("file is truncated: the gzip member at offset %d is cut off", start)
            return -1
        if status == "corrupt":
            if not (resyncing and not first) and not already_counted:
                counters["broken_record"] += 1
                scan.warn("corrupt gzip member at offset %d: %r", start, error)
            magic = _find(f, _GZIP_MAGIC, start + 1)
            return magic if magic is not None else -1
        if first:
            first = False
            already_counted = False
            start = nxt
            continue
        # a complete member FastWARC could not read: skip it as one broken record
        counters["broken_record"] += 1
        scan.warn("unreadable record at offset %d: %r", start, error)
        return nxt
    return -1


def read_warc(
    path: WarcFile,
    *,
    dump: str,
    warc_path: str,
    counters: Counter[str],
    batch_size: int = 500,
    start: int = 0,
    end: int | None = None,
    chunk_size: int | None = None,
    batch_bytes: int = BATCH_HTML_BYTES,
) -> Iterator[pa.Table | ChunkEnd]:
    """Yield ``RAW_SCHEMA`` batches of the HTTP 200 HTML responses of one WARC file (gzip or plain).

    ``warc_path`` is the path relative to the crawl (stored as is). Bad input is counted in ``counters``,
    never raised; see the module docstring for the keys. ``start``, ``end`` and ``chunk_size`` are those of
    :func:`iter_html_records`: with ``chunk_size``, a batch never spans two chunks and each :class:`ChunkEnd`
    comes after the chunk's last batch. A batch ends at ``batch_size`` documents or ``batch_bytes`` of decoded
    HTML, whichever comes first.
    """
    columns: dict[str, list] = {name: [] for name in RAW_SCHEMA.names}
    html_bytes = 0
    path = Path(path) if isinstance(path, str) else path
    records = iter_html_records(path, counters, label=warc_path, start=start, end=end, chunk_size=chunk_size)
    for record in records:
        if isinstance(record, ChunkEnd):
            if columns["id"]:
                yield _to_table(columns)
                columns = {name: [] for name in RAW_SCHEMA.names}
                html_bytes = 0
            yield record
            continue
        text, encoding = decode_html(record.payload, record.content_type)
        if encoding.endswith(REPLACED):
            counters["decode_fallback"] += 1
        elif encoding.endswith(DETECTED):
            counters["decode_detected"] += 1
        if record.url is None:
            counters["missing_url"] += 1
        record_id = record.record_id or f"{warc_path}:{record.url}:{record.date}"
        columns["id"].append(document_id(record_id))
        columns["url"].append(record.url)
        columns["domain"].append(url_domain(record.url))
        columns["dump"].append(dump)
        columns["warc_path"].append(warc_path)
        columns["warc_date"].append(parse_warc_date(record.date))
        columns["html"].append(text)
        html_bytes += sys.getsizeof(text)
        counters["documents"] += 1
        if len(columns["id"]) >= batch_size or html_bytes >= batch_bytes:
            yield _to_table(columns)
            columns = {name: [] for name in RAW_SCHEMA.names}
            html_bytes = 0
    if columns["id"]:
        yield _to_table(columns)


def _to_table(columns: dict[str, list]) -> pa.Table:
    return pa.Table.from_arrays([pa.array(columns[f.name], f.type) for f in RAW_SCHEMA], schema=RAW_SCHEMA)
