"""A small Common Crawl dump, in Common Crawl's own layout, built from real pages shipped in pipeline/demo/sample_data.

The demo and the tests run the real listing, download and WARC-reading code against it (served over HTTP by
``pipeline.demo.mirror``), so it mimics what a real dump holds: ``warc.paths.gz``, segments, per-record gzip
WARC files with warcinfo/request/response/metadata records, and the awkward cases a pipeline must survive.
What was planted where is written to ``crawl-data/<dump>/sample_manifest.json`` so tests can check each stage.

The build is deterministic: same inputs, byte-identical files (fixed dates, record ids hashed from url+index,
gzip mtime 0).
"""

from __future__ import annotations

import gzip
import hashlib
import html
import importlib.resources
import io
import json
import logging
import os
import re
import struct
import tarfile
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import BinaryIO, TypeVar
from urllib.parse import urldefrag, urlsplit

from warcio.archiveiterator import ArchiveIterator
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from pipeline.core.storage import write_bytes_atomic
from pipeline.demo import SAMPLE_DUMP

log = logging.getLogger(__name__)
T = TypeVar("T")

SAMPLE_DATA = importlib.resources.files("pipeline.demo") / "sample_data"
"""The vendored pages and WARC files: a folder, or a folder inside the zip spark-submit ships (--py-files)."""
MANIFEST_NAME = "sample_manifest.json"
HTML_TYPES = ("text/html", "application/xhtml+xml")
_DUMP_RE = re.compile(r"^CC-MAIN-(\d{4})-(\d{2})$")
_USER_AGENT = "CCBot/2.0 (https://commoncrawl.org/faq/)"
_SERVERS = ["nginx", "Apache", "cloudflare", "Microsoft-IIS/10.0", "LiteSpeed", "openresty"]
_LANGUAGE_PAGE_LANGS = ["de", "fr", "es", "ru", "ja", "zh", "ar", "pt"]
_NO_SPACE_LANGS = {"ja", "zh"}


@dataclass
class SampleCrawl:
    """Where the sample dump was written and what it holds."""

    root: Path
    dump: str
    warc_paths: list[str]
    planted: dict[str, list[str]]
    num_html_responses: int

    @property
    def dump_dir(self) -> Path:
        return self.root / "crawl-data" / self.dump

    @property
    def manifest_path(self) -> Path:
        return self.dump_dir / MANIFEST_NAME

    @property
    def warc_files(self) -> list[Path]:
        return [self.root / p for p in self.warc_paths]


@dataclass
class _Capture:
    """One fetched URL; becomes a request, a response and a metadata record."""

    url: str
    payload: bytes
    content_type: str | None
    kinds: list[str] = field(default_factory=list)
    identified_type: str | None = "text/html"
    headers: list[tuple[str, str]] | None = None  # full HTTP response headers (real records); else generated
    status: str = "200 OK"
    truncated: bool = False
    http_content_length: int | None = None  # a wrong declared length, for the malformed case
    raw_http_block: bytes | None = None  # written as is: an HTTP block that does not parse
    duplicate_of: str | None = None  # the original's URL, for planted duplicates

    @property
    def is_html(self) -> bool:
        return self.identified_type in HTML_TYPES and self.raw_http_block is None


# ---------------------------------------------------------------------------------------------------------------
# small deterministic helpers


def _digest(*parts: object) -> bytes:
    return hashlib.sha256("|".join(map(str, parts)).encode("utf-8")).digest()


def _pick(seq: list[T], *key: object) -> T:
    return seq[int.from_bytes(_digest(*key)[:4], "big") % len(seq)]


def _record_id(*key: object) -> str:
    return f"<urn:uuid:{uuid.UUID(bytes=_digest(*key)[:16], version=4)}>"


def _warc_date(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def crawl_start(dump: str) -> datetime:
    """When a dump's crawl started: CC-MAIN-YYYY-WW is named after the week it ends, about ten days later."""
    m = _DUMP_RE.match(dump)
    if not m:
        raise ValueError(f"dump must look like CC-MAIN-YYYY-WW, got {dump!r}")
    monday = datetime.fromisocalendar(int(m.group(1)), int(m.group(2)), 1).replace(tzinfo=UTC)
    return monday - timedelta(days=10) + timedelta(hours=23, minutes=31, seconds=22)


# ---------------------------------------------------------------------------------------------------------------
# reading the vendored sample data


def _index() -> dict:
    return json.loads((SAMPLE_DATA / "index.json").read_text(encoding="utf-8"))


def _sentences(index: dict) -> dict[str, list[str]]:
    out = {}
    for code, rel in index["lingua"].items():
        text = gzip.decompress((SAMPLE_DATA / rel).read_bytes()).decode("utf-8")
        out[code] = [line.strip() for line in text.splitlines() if line.strip()]
    return out


def _page_content_type(page: dict) -> str:
    """What a server would declare for a vendored page: its real charset when known, sometimes none."""
    if page["utf8"]:
        return _pick(["text/html; charset=UTF-8", "text/html; charset=utf-8", "text/html"], page["url"])
    return f"text/html; charset={page['meta_charset']}" if page["meta_charset"] else "text/html"


def _identified_type(payload: bytes) -> str:
    head = payload[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return "application/xhtml+xml" if head.startswith(b"<?xml") or b"xhtml" in head[:300] else "text/html"


def _vendored_pages(index: dict) -> list[_Capture]:
    captures = []
    for page in index["pages"]:
        payload = gzip.decompress((SAMPLE_DATA / page["file"]).read_bytes())
        kinds = [f"source:{page['source']}"] + ([f"language:{page['lang']}"] if page["lang"] else [])
        url = urldefrag(page["url"]).url
        captures.append(_Capture(url, payload, _page_content_type(page), kinds, _identified_type(payload)))
    return captures


def _cc_headers(headers: list[tuple[str, str]], payload_length: int) -> list[tuple[str, str]]:
    """Headers as Common Crawl stores them for a decoded payload: the transfer and content encodings the server
    used are kept as X-Crawler-* headers, and Content-Length is the stored payload's length."""
    out = []
    for name, value in headers:
        low = name.lower()
        if low in ("transfer-encoding", "content-encoding"):
            out.append((f"X-Crawler-{name}", value))
        elif low == "content-length":
            if value.strip() != str(payload_length):
                out.append(("X-Crawler-Content-Length", value))
        else:
            out.append((name, value))
    return [*out, ("Content-Length", str(payload_length))]


def _warc_captures(index: dict) -> list[_Capture]:
    """HTML responses of the vendored WARC files, re-recorded the way Common Crawl stores payloads (decoded)."""
    captures = []
    for entry in index["warcs"]:
        name = Path(entry["file"]).name
        with (SAMPLE_DATA / entry["file"]).open("rb") as fh:
            for rec in ArchiveIterator(fh):
                if rec.rec_type != "response" or rec.http_headers is None:
                    continue
                ctype = rec.http_headers.get_header("Content-Type") or ""
                if "html" not in ctype.lower():
                    continue
                payload = rec.content_stream().read()
                truncated = bool(entry.get("truncated"))
                headers = _cc_headers(rec.http_headers.headers, len(payload))
                kinds = [f"source:warc:{name.removesuffix('.warc.gz')}"] + (["truncated"] if truncated else [])
                ident = rec.rec_headers.get_header("WARC-Identified-Payload-Type") or _identified_type(payload)
                url = rec.rec_headers.get_header("WARC-Target-URI")
                status = rec.http_headers.statusline
                captures.append(_Capture(url, payload, ctype, kinds, ident, headers, status, truncated=truncated))
    return captures


# ---------------------------------------------------------------------------------------------------------------
# generated pages: languages, boilerplate, blocklisted URLs, charsets, duplicates, non-HTML, malformed


def _html_page(
    title: str,
    paragraphs: list[str],
    *,
    lang: str | None,
    charset_meta: str | None,
    nav: str = "",
    rtl: bool = False,
) -> str:
    lang_attr = f' lang="{lang}"' if lang else ""
    dir_attr = ' dir="rtl"' if rtl else ""
    meta = charset_meta or ""
    body = "\n".join(f"<p>{html.escape(p, quote=False)}</p>" for p in paragraphs)
    title = html.escape(title, quote=False)
    return (
        f"<!DOCTYPE html>\n<html{lang_attr}{dir_attr}>\n<head>\n{meta}<title>{title}</title>\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<link rel="stylesheet" href="/assets/site.css">\n</head>\n<body>\n'
        f"{nav}<main>\n<article>\n<h1>{title}</h1>\n{body}\n</article>\n</main>\n"
        "<footer><p>&copy; 2024</p></footer>\n</body>\n</html>\n"
    )


def _join(sentences: list[str], lang: str) -> str:
    return ("" if lang in _NO_SPACE_LANGS else " ").join(sentences)


def _short_title(sentence: str) -> str:
    return sentence[:70].rstrip(" ,.;:") if len(sentence) > 70 else sentence.rstrip(".")


_SMALL_NAV = '<nav><a href="/">Home</a> <a href="/archive">Archive</a> <a href="/about">About</a></nav>\n'


def _language_pages(sentences: dict[str, list[str]]) -> list[_Capture]:
    """Four pages per language made of real sentences; html lang attributes vary, one is wrong (as on the web)."""
    sections = ["news", "blog", "forum", "wiki"]
    captures = []
    for lang in _LANGUAGE_PAGE_LANGS:
        for p, section in enumerate(sections):
            chunk = sentences[lang][p * 12 : (p + 1) * 12]
            paragraphs = [_join(chunk[i : i + 4], lang) for i in range(0, 12, 4)]
            kinds = [f"language:{lang}", "source:generated"]
            lang_attr: str | None = [lang, None, f"{lang}-{lang.upper()}", lang][p]
            if lang == "de" and p == 3:
                lang_attr = "en"
                kinds.append("html_lang_mismatch")
            doc = _html_page(
                _short_title(chunk[0]),
                paragraphs,
                lang=lang_attr,
                charset_meta='<meta charset="utf-8">\n',
                nav=_SMALL_NAV,
                rtl=lang == "ar",
            )
            url = f"https://{section}.{lang}-sample.example.org/{section}/{2024 - p}/page-{p + 1}.html"
            ctype = "text/html; charset=utf-8" if p % 2 == 0 else "text/html"
            captures.append(_Capture(url, doc.encode("utf-8"), ctype, kinds))
    return captures


_MENU = {
    "Shop": ["Electronics", "Home & Garden", "Fashion", "Toys", "Sports", "Books", "Music", "Deals", "Gift Cards"],
    "Services": ["Delivery", "Returns", "Warranty", "Installation", "Repairs", "Trade-in", "Financing", "Business"],
    "Community": ["Forums", "Events", "Blog", "Newsletter", "Reviews", "Ideas", "Photo contest", "Ambassadors"],
    "Help": ["Contact us", "FAQ", "Track order", "Size guide", "Accessibility", "Store locator", "Careers", "Press"],
    "Legal": ["Privacy policy", "Cookie settings", "Terms of use", "Imprint", "Sitemap", "Security", "Compliance"],
}
_TRENDING = [
    "Ten tips for a better morning routine",
    "What to pack for a weekend away",
    "The best budget laptops this season",
    "How to keep houseplants alive in winter",
    "Readers' photos of the week",
    "Five easy dinners under thirty minutes",
    "Why everyone is talking about heat pumps",
    "A beginner's guide to trail running",
    "The gadgets our editors actually use",
    "Ask the expert: saving on energy bills",
]
_COOKIE_TEXT = (
    "We and our partners use cookies and similar technologies to store and access information on your device, "
    "to personalise content and ads, to provide social media features and to analyse our traffic. You can accept "
    "all cookies, reject non-essential cookies, or manage your preferences at any time in the cookie settings. "
    "Some partners process data on the basis of legitimate interest, which you can object to in the settings."
)


def _boilerplate_page(site: str, paragraph: str, i: int) -> str:
    menus = "\n".join(
        f'<li class="menu"><span>{name}</span><ul>'
        + "".join(f'<li><a href="/{name.lower()}/{j}">{item}</a></li>' for j, item in enumerate(items))
        + "</ul></li>"
        for name, items in _MENU.items()
    )
    trending = "".join(f'<li><a href="/t/{j}">{t}</a></li>' for j, t in enumerate(_TRENDING[i:] + _TRENDING[:i]))
    footer_cols = "".join(
        f"<div class=col><h4>{name}</h4><ul>"
        + "".join(f"<li><a href='#'>{item}</a></li>" for item in items)
        + "</ul></div>"
        for name, items in _MENU.items()
    )
    return (
        f"<!DOCTYPE html>\n<html lang=en>\n<head><meta charset=utf-8><title>{site} | Latest</title></head>\n<body>\n"
        f'<div id="cookie-banner" class="consent"><p>{_COOKIE_TEXT}</p><button>Accept all</button>'
        "<button>Reject non-essential</button><button>Manage preferences</button></div>\n"
        f'<header><div class="logo"><a href="/">{site}</a></div><nav class="mega-menu"><ul>\n{menus}\n</ul></nav>'
        '<form class="search"><input placeholder="Search products, articles and more"></form>'
        '<a href="/login">Sign in</a> <a href="/register">Create account</a> <a href="/cart">Cart (0)</a></header>\n'
        f'<div class="breadcrumbs"><a href="/">Home</a> &rsaquo; <a href="/news">News</a> &rsaquo; Article {i}</div>\n'
        f"<main><article><p>{paragraph}</p></article>\n<aside><h3>Trending now</h3><ul>{trending}</ul>"
        "<h3>Newsletter</h3><p>Get the best stories, deals and tips delivered to your inbox every week. "
        "Sign up now and never miss an update from our editors.</p><input placeholder='Your email'>"
        "<button>Subscribe</button></aside></main>\n"
        f"<footer>{footer_cols}<p>Follow us on Facebook, Instagram, X, YouTube and TikTok.</p>"
        f"<p>&copy; 2024 {site}. All rights reserved. Prices include VAT. Offers valid while stocks last.</p>"
        "</footer>\n</body>\n</html>\n"
    )


def _boilerplate_pages(sentences: dict[str, list[str]]) -> list[_Capture]:
    """A short real paragraph drowned in menus, cookie banners, trending lists and footers."""
    sites = ["HomeDeals", "TravelNow", "KitchenCorner", "GadgetDaily", "CityLife", "GardenHub"]
    captures = []
    for i, site in enumerate(sites):
        paragraph = html.escape(" ".join(sentences["en"][120 + 3 * i : 123 + 3 * i]), quote=False)
        url = f"https://www.{site.lower()}.example.com/news/article-{1000 + i}.html"
        doc = _boilerplate_page(site, paragraph, i)
        kinds = ["boilerplate_heavy", "language:en", "source:generated"]
        captures.append(_Capture(url, doc.encode("utf-8"), "text/html; charset=utf-8", kinds))
    return captures


_DOMAIN_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*\.[a-z]{2,}$")
_WORD_RE = re.compile(r"^[a-z0-9]+$")


def _datatrove_assets() -> Path:
    import datatrove

    return Path(datatrove.__file__).parent / "assets"


def blocklist_picks(count: int = 4) -> tuple[list[str], list[str]]:
    """Real entries of datatrove's shipped lists, picked deterministically: UT1 domains and banned URL words."""
    assets = _datatrove_assets()
    domains: list[str] = []
    stride, seen = 50_021, 0
    with tarfile.open(assets / "url_filterblacklistsv0_3_0.tar.gz", "r:gz") as tar:
        member = tar.extractfile("domains")
        if member is None:
            raise FileNotFoundError("datatrove's UT1 archive has no 'domains' file")
        for line in member:
            seen += 1
            domain = line.decode("utf-8", "replace").strip()
            if seen >= stride * (len(domains) + 1) and _DOMAIN_RE.match(domain):
                domains.append(domain)
                if len(domains) == count:
                    break
    words = [w.strip() for w in (assets / "banned_words.txt").read_text(encoding="utf-8").splitlines()]
    words = sorted((w for w in words if _WORD_RE.match(w) and len(w) >= 4), key=lambda w: _digest("word", w))
    return domains, words[:count]


def _blocklist_pages(sentences: dict[str, list[str]]) -> list[_Capture]:
    domains, words = blocklist_picks()
    captures = []
    for i, domain in enumerate(domains):
        doc = _html_page(
            f"Welcome {i}",
            [" ".join(sentences["en"][160 + 4 * i : 164 + 4 * i])],
            lang="en",
            charset_meta='<meta charset="utf-8">\n',
        )
        captures.append(
            _Capture(
                f"http://{domain}/index.php?page={i + 2}",
                doc.encode(),
                "text/html",
                ["blocklist:domain", "source:generated"],
            )
        )
    for i, word in enumerate(words):
        doc = _html_page(
            f"Gallery {i}",
            [" ".join(sentences["en"][180 + 4 * i : 184 + 4 * i])],
            lang="en",
            charset_meta='<meta charset="utf-8">\n',
        )
        url = f"https://www.media-archive.example.net/gallery/{word}/clip-{i + 1}.html"
        captures.append(
            _Capture(url, doc.encode(), "text/html; charset=UTF-8", ["blocklist:banned_word", "source:generated"])
        )
    return captures


def _encodable(sentences: list[str], codec: str, n: int) -> list[str]:
    out = []
    for s in sentences:
        try:
            s.encode(codec)
        except UnicodeEncodeError:
            continue
        if any(ord(c) > 127 for c in s):
            out.append(s)
            if len(out) == n:
                break
    return out


def _charset_pages(sentences: dict[str, list[str]]) -> list[_Capture]:
    """Pages in legacy encodings, declared in the header, only in a meta tag, or declared wrongly."""
    specs = [
        # (kind, lang, python codec, header content type, meta tag, extra kinds)
        (
            "windows-1252",
            "fr",
            "cp1252",
            "text/html; charset=windows-1252",
            '<meta http-equiv="Content-Type" content="text/html; charset=windows-1252">\n',
            [],
        ),
        (
            "shift_jis",
            "ja",
            "shift_jis",
            "text/html",
            '<meta http-equiv="Content-Type" content="text/html; charset=Shift_JIS">\n',
            ["charset:meta_only"],
        ),
        ("euc-kr", "ko", "euc_kr", "text/html; charset=EUC-KR", None, []),
        (
            "latin-1_declared_utf-8",
            "pt",
            "latin-1",
            "text/html; charset=utf-8",
            '<meta charset="utf-8">\n',
            ["charset:mislabelled"],
        ),
    ]
    captures = []
    for name, lang, codec, ctype, meta, extra in specs:
        chosen = _encodable(sentences[lang][200:], codec, 8)
        if len(chosen) < 8:
            raise RuntimeError(f"too few {lang} sentences encodable as {codec}")
        title = "Chroniques d’été – notes" if codec == "cp1252" else _short_title(chosen[0])
        paragraphs = [_join(chosen[i : i + 4], lang) for i in (0, 4)]
        doc = _html_page(title, paragraphs, lang=lang, charset_meta=meta, nav=_SMALL_NAV)
        url = f"http://www.legacy-{lang}.example.net/archiv/{name.replace('_', '-')}.html"
        kinds = [f"charset:{name}", f"language:{lang}", "source:generated", *extra]
        captures.append(_Capture(url, doc.encode(codec), ctype, kinds))
    return captures


_PARAGRAPH_RE = re.compile(r"(<p[^>]*>)([^<]{120,})(</p>)")


def _small_edit(doc: str) -> str | None:
    """Drop one word from the first and from the longest plain paragraph, as an editor would."""
    found = list(_PARAGRAPH_RE.finditer(doc))
    if not found:
        return None
    longest = max(found, key=lambda m: len(m.group(2)))
    chosen = {m.start(2): m for m in (found[0], longest)}  # one edit when the first paragraph is the longest
    for start in sorted(chosen, reverse=True):  # from the end, so earlier offsets stay valid
        m = chosen[start]
        words = m.group(2).split(" ")
        doc = doc[: m.start(2)] + " ".join(words[:5] + words[6:]) + doc[m.end(2) :]
    return doc


def _duplicates(pages: list[_Capture]) -> list[_Capture]:
    """Near-duplicates (republished with another nav, a new title and a dropped word) and one exact copy."""
    captures = []
    originals = [p for p in pages if "source:aeb" in p.kinds and "language:en" in p.kinds]
    originals += [p for p in pages if "source:trafilatura_eval" in p.kinds and "language:de" in p.kinds]
    nav = (
        '<nav class="syndication-nav"><a href="/">Front page</a> | <a href="/world">World</a> | '
        '<a href="/business">Business</a> | <a href="/tech">Tech</a> | <a href="/opinion">Opinion</a></nav>\n'
    )
    made_en = made_de = 0
    for page in originals:
        is_de = "language:de" in page.kinds
        if (is_de and made_de >= 1) or (not is_de and made_en >= 5) or not _is_utf8(page.payload):
            continue
        edited = _small_edit(page.payload.decode("utf-8"))
        if edited is None:
            continue
        edited = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + "\n" + nav, edited, count=1)
        edited = re.sub(r"</title>", " | Syndicated</title>", edited, count=1)
        host = urlsplit(page.url).hostname or "unknown"
        copy_url = f"https://syndicated-news.example.net/{host}/{hashlib.sha1(page.url.encode()).hexdigest()[:10]}"
        kinds = [k for k in page.kinds if k.startswith("language:")] + ["near_duplicate:copy", "source:generated"]
        captures.append(_Capture(copy_url, edited.encode("utf-8"), page.content_type, kinds, duplicate_of=page.url))
        page.kinds.append("near_duplicate:original")
        made_de += is_de
        made_en += not is_de
    exact = next(p for p in originals if not any(k.startswith("near_duplicate") for k in p.kinds))
    sep = "&" if "?" in exact.url else "?"
    kinds = [k for k in exact.kinds if k.startswith("language:")] + ["exact_duplicate:copy", "source:generated"]
    copy_url = f"{exact.url}{sep}utm_source=rss&utm_medium=feed"
    captures.append(_Capture(copy_url, exact.payload, exact.content_type, kinds, duplicate_of=exact.url))
    exact.kinds.append("exact_duplicate:original")
    return captures


def _png(width: int = 24, height: int = 24) -> bytes:
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    rows = b"".join(
        b"\x00" + bytes(v for x in range(width) for v in (x * 10 % 256, y * 10 % 256, 160)) for y in range(height)
    )
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")


def _pdf(text: str) -> bytes:
    stream = f"BT /F1 18 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for i, obj in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (i, obj)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


_CSS = b"""body{margin:0;font-family:Georgia,serif;line-height:1.5;color:#222}
header,footer{background:#f4f4f4;padding:1rem}
nav a{margin-right:.75rem;text-decoration:none}
article{max-width:40rem;margin:2rem auto}
@media (max-width:600px){article{margin:1rem}}
"""


def _non_html() -> list[_Capture]:
    png = _png()
    return [
        _Capture("https://static.example.com/img/logo.png", png, "image/png", ["non_html:image/png"], "image/png"),
        _Capture(
            "https://docs.example.org/reports/annual-report-2023.pdf",
            _pdf("Annual report 2023"),
            "application/pdf",
            ["non_html:application/pdf"],
            "application/pdf",
        ),
        _Capture("https://static.example.com/css/site.css", _CSS, "text/css", ["non_html:text/css"], "text/css"),
        # The server says HTML, the payload is an image: content sniffing disagrees with the header.
        _Capture(
            "https://cdn.example.net/banner?id=42",
            png,
            "text/html; charset=UTF-8",
            ["non_html:image/png", "content_type_mismatch"],
            "image/png",
        ),
    ]


def _malformed(pages: list[_Capture]) -> list[_Capture]:
    """A response whose HTTP header block is garbage, and a real page whose HTTP Content-Length lies."""
    block = (
        b"\x00\x00\x1bHTTP/1.1 ??? \xff\xfe\r\n\x89\x01\x02 this is not a header\r\n: no name\r\n"
        b"Content-Type text/html missing colon\r\n\r\n<html><body><p>Broken server output.</p></body></html>"
    )
    bad = _Capture("https://broken-server.example.com/status", b"", None, ["malformed:http_header_block"], None)
    bad.raw_http_block = block
    victim = next(p for p in pages if "source:aeb" in p.kinds and len(p.kinds) == 2)
    victim.http_content_length = len(victim.payload) + 54_321
    victim.kinds.append("malformed:http_content_length")
    return [bad]


# ---------------------------------------------------------------------------------------------------------------
# writing


def _generated_headers(cap: _Capture, when: datetime) -> list[tuple[str, str]]:
    length = cap.http_content_length if cap.http_content_length is not None else len(cap.payload)
    headers = [("Date", format_datetime(when, usegmt=True)), ("Server", _pick(_SERVERS, cap.url, "server"))]
    if cap.content_type:
        headers.append(("Content-Type", cap.content_type))
    if _digest(cap.url, "gzip")[0] % 2 == 0:
        headers.append(("X-Crawler-Content-Encoding", "gzip"))
    headers += [("Vary", "Accept-Encoding"), ("Cache-Control", "max-age=600"), ("Content-Length", str(length))]
    return headers


def _request_headers(url: str) -> StatusAndHeaders:
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = [
        ("User-Agent", _USER_AGENT),
        ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
        ("Accept-Language", "en-US,en;q=0.5"),
        ("Accept-Encoding", "br,gzip"),
        ("Host", parts.netloc),
        ("Connection", "Keep-Alive"),
    ]
    return StatusAndHeaders(f"GET {target} HTTP/1.1", headers, is_http_request=True)


def _charset_detected(cap: _Capture) -> str | None:
    if not cap.is_html:
        return None
    if _is_utf8(cap.payload):
        return "UTF-8"
    from charset_normalizer import from_bytes

    best = from_bytes(cap.payload).best()
    return best.encoding.upper() if best else None


def _sha1_b32(data: bytes) -> str:
    import base64

    return "sha1:" + base64.b32encode(hashlib.sha1(data).digest()).decode("ascii")


def _raw_record(headers: list[tuple[str, str]], block: bytes) -> bytes:
    """One gzip member holding a record written byte for byte (warcio would re-serialise the HTTP block)."""
    head = "WARC/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    head += f"Content-Length: {len(block)}\r\nWARC-Block-Digest: {_sha1_b32(block)}\r\n\r\n"
    return _gzip(head.encode("utf-8") + block + b"\r\n\r\n")


def _write_capture(writer: WARCWriter, out: BinaryIO, cap: _Capture, n: int, when: datetime, info_id: str) -> str:
    """Write request, response and metadata records; return the response's record id."""
    date = _warc_date(when)
    ip = f"{_pick(['192.0.2', '198.51.100', '203.0.113'], cap.url, 'net')}.{_digest(cap.url, 'ip')[0] % 254 + 1}"
    req_id, resp_id, meta_id = (_record_id(cap.url, n, t) for t in ("request", "response", "metadata"))

    def warc_headers(rec_type: str, rec_id: str, concurrent_to: str | None = None) -> dict[str, str]:
        # Common Crawl's order: type, date, id, then links, address and target
        headers = {"WARC-Type": rec_type, "WARC-Date": date, "WARC-Record-ID": rec_id, "WARC-Warcinfo-ID": info_id}
        if concurrent_to:
            headers["WARC-Concurrent-To"] = concurrent_to
        return {**headers, "WARC-IP-Address": ip, "WARC-Target-URI": cap.url}

    request = writer.create_warc_record(
        cap.url,
        "request",
        payload=io.BytesIO(b""),
        length=0,
        warc_headers_dict=warc_headers("request", req_id),
        http_headers=_request_headers(cap.url),
    )
    writer.write_record(request)

    resp_headers = warc_headers("response", resp_id, req_id)
    if cap.raw_http_block is not None:
        # no WARC-Payload-Digest: with no parseable HTTP block there is no payload to digest
        fields = [*resp_headers.items(), ("Content-Type", "application/http; msgtype=response")]
        out.write(_raw_record(fields, cap.raw_http_block))
    else:
        if cap.identified_type:
            resp_headers["WARC-Identified-Payload-Type"] = cap.identified_type
        if cap.truncated:
            resp_headers["WARC-Truncated"] = "length"
        headers = cap.headers if cap.headers is not None else _generated_headers(cap, when)
        response = writer.create_warc_record(
            cap.url,
            "response",
            payload=io.BytesIO(cap.payload),
            length=len(cap.payload),
            warc_headers_dict=resp_headers,
            http_headers=StatusAndHeaders(cap.status, headers, protocol="HTTP/1.1"),
        )
        writer.write_record(response)

    fetch_ms = 50 + int.from_bytes(_digest(cap.url, "fetch")[:2], "big") % 2000
    fields = f"fetchTimeMs: {fetch_ms}\r\n"
    charset = _charset_detected(cap)
    if charset:
        fields += f"charset-detected: {charset}\r\n"
    metadata = writer.create_warc_record(
        cap.url,
        "metadata",
        payload=io.BytesIO(fields.encode()),
        length=len(fields),
        warc_content_type="application/warc-fields",
        warc_headers_dict=warc_headers("metadata", meta_id, resp_id),
    )
    writer.write_record(metadata)
    return resp_id


def _write_warc(path: Path, dump: str, captures: list[_Capture], start: datetime, first: int) -> list[dict]:
    """One WARC file: a warcinfo record, then a request/response/metadata triple per capture."""
    path.parent.mkdir(parents=True, exist_ok=True)
    info = (
        f"isPartOf: {dump}\r\npublisher: Common Crawl (sample built by cc-refinery)\r\n"
        "description: Sample of real web pages in Common Crawl's layout, for demos and tests\r\n"
        "software: cc-refinery sample crawl builder\r\nformat: WARC File Format 1.1\r\n"
        "conformsTo: https://iipc.github.io/warc-specifications/specifications/warc-format/warc-1.1/\r\n"
    ).encode()
    info_id = _record_id(path.name, "warcinfo")
    records = []
    # a temporary name renamed into place: a mirror serving the previous build (another run) never sees half a file
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as out:
        writer = WARCWriter(out, gzip=True)
        warcinfo = writer.create_warc_record(
            "",
            "warcinfo",
            payload=io.BytesIO(info),
            length=len(info),
            warc_content_type="application/warc-fields",
            warc_headers_dict={
                "WARC-Type": "warcinfo",
                "WARC-Date": _warc_date(start),
                "WARC-Record-ID": info_id,
                "WARC-Filename": path.name,
            },
        )
        writer.write_record(warcinfo)
        for k, cap in enumerate(captures):
            n = first + k
            resp_id = _write_capture(writer, out, cap, n, start + timedelta(seconds=11 * (k + 1)), info_id)
            records.append(
                {
                    "url": cap.url,
                    "record_id": resp_id,
                    "content_type": cap.content_type,
                    "identified_type": cap.identified_type,
                    "kinds": sorted(cap.kinds),
                }
            )
    os.replace(tmp, path)
    return records


def _all_captures() -> list[_Capture]:
    index = _index()
    sentences = _sentences(index)
    pages = _vendored_pages(index)
    captures = pages + _warc_captures(index)
    captures += _duplicates(pages)
    captures += _malformed(pages)
    captures += _language_pages(sentences) + _boilerplate_pages(sentences) + _blocklist_pages(sentences)
    captures += _charset_pages(sentences) + _non_html()
    for cap in captures:
        if cap.is_html and not _is_utf8(cap.payload):
            cap.kinds.append("charset:non_utf8")
            if "charset=" not in (cap.content_type or "").lower() and b"charset" not in cap.payload[:4096].lower():
                cap.kinds.append("charset:undeclared")
    urls = [c.url for c in captures]
    if len(set(urls)) != len(urls) or not all(u.startswith(("http://", "https://")) for u in urls):
        raise RuntimeError("sample crawl target URIs must be unique http(s) URLs")
    return captures


def _planted(captures: list[_Capture]) -> dict[str, list[str]]:
    """kind -> target URIs, sorted; duplicate pairs stay aligned (the i-th copy duplicates the i-th original)."""
    planted: dict[str, list[str]] = {}
    for cap in captures:
        for kind in cap.kinds:
            planted.setdefault(kind, []).append(cap.url)
    planted = {k: sorted(v) for k, v in sorted(planted.items())}
    for pair in ("near_duplicate", "exact_duplicate"):
        pairs = sorted((c.duplicate_of, c.url) for c in captures if c.duplicate_of and f"{pair}:copy" in c.kinds)
        planted[f"{pair}:original"] = [o for o, _ in pairs]
        planted[f"{pair}:copy"] = [c for _, c in pairs]
    return planted


def _split(captures: list[_Capture], num_warcs: int) -> list[list[_Capture]]:
    """Spread captures over the files in a fixed shuffled order; never end a file on the malformed record."""
    ordered = sorted(captures, key=lambda c: _digest("order", c.url))
    size, rest = divmod(len(ordered), num_warcs)
    chunks, pos = [], 0
    for j in range(num_warcs):
        n = size + (1 if j < rest else 0)
        chunk = ordered[pos : pos + n]
        pos += n
        if len(chunk) > 1 and chunk[-1].raw_http_block is not None:
            chunk[-1], chunk[-2] = chunk[-2], chunk[-1]
        chunks.append(chunk)
    return chunks


def warc_relative_path(dump: str, j: int) -> str:
    """Common Crawl's path for the j-th WARC file of a dump: two files per segment, numbered through the crawl."""
    start = crawl_start(dump)
    segment = f"{int((start - timedelta(hours=5)).timestamp() * 1000) + 216}.{39 + j // 2}"
    t0 = start + timedelta(hours=3 * j)
    t1 = t0 + timedelta(hours=3)
    name = f"CC-MAIN-{t0:%Y%m%d%H%M%S}-{t1:%Y%m%d%H%M%S}-{j:05d}.warc.gz"
    return f"crawl-data/{dump}/segments/{segment}/warc/{name}"


def build_sample_crawl(dest: Path, dump: str = SAMPLE_DUMP, num_warcs: int = 4) -> SampleCrawl:
    """Write the sample dump under ``dest`` in Common Crawl's layout and return what it holds."""
    start = crawl_start(dump)
    captures = _all_captures()
    if not 1 <= num_warcs <= len(captures) // 3:
        raise ValueError(f"num_warcs must be between 1 and {len(captures) // 3}, got {num_warcs}")
    dest = Path(dest)
    dump_dir = dest / "crawl-data" / dump
    dump_dir.mkdir(parents=True, exist_ok=True)
    warc_paths, records, first = [], [], 0
    for j, chunk in enumerate(_split(captures, num_warcs)):
        rel = warc_relative_path(dump, j)
        for rec in _write_warc(dest / rel, dump, chunk, start + timedelta(hours=3 * j), first):
            records.append({"warc_path": rel, **rec})
        warc_paths.append(rel)
        first += len(chunk)
    write_bytes_atomic(dump_dir / "warc.paths.gz", _gzip("".join(p + "\n" for p in warc_paths).encode()))

    planted = _planted(captures)
    num_html = sum(c.is_html for c in captures)
    crawl = SampleCrawl(dest, dump, warc_paths, planted, num_html)
    manifest = {
        "dump": dump,
        "warc_paths": warc_paths,
        "num_html_responses": num_html,
        "num_responses": len(captures),
        "planted": planted,
        "responses": records,
    }
    write_bytes_atomic(crawl.manifest_path, (json.dumps(manifest, indent=1, ensure_ascii=False) + "\n").encode())
    size = sum((dest / p).stat().st_size for p in warc_paths)
    log.info(
        "sample crawl %s: %d WARC files, %d responses (%d HTML), %d bytes",
        dump,
        num_warcs,
        len(captures),
        num_html,
        size,
    )
    return crawl


def load_sample_crawl(root: Path, dump: str = SAMPLE_DUMP) -> SampleCrawl:
    """Read back what ``build_sample_crawl`` wrote (its manifest), e.g. in a test that got only the folder."""
    path = Path(root) / "crawl-data" / dump / MANIFEST_NAME
    data = json.loads(path.read_text(encoding="utf-8"))
    return SampleCrawl(Path(root), data["dump"], data["warc_paths"], data["planted"], data["num_html_responses"])


def sample_manifest(root: Path, dump: str = SAMPLE_DUMP) -> dict:
    """The full manifest, including one entry per response record (url, warc_path, record_id, kinds)."""
    return json.loads((Path(root) / "crawl-data" / dump / MANIFEST_NAME).read_text(encoding="utf-8"))
