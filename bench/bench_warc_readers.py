"""FastWARC vs warcio on the real WARC samples: same record selection, same records, records/s and MB/s.

Run: ``.venv/bin/python -m bench.bench_warc_readers [--repeat 5]``; writes ``bench/results/warc_readers.md``.

Rows:
- ``fastwarc select``: ``iter_html_records`` (what ``read_warc`` uses), payload bytes only;
- ``warcio select``: the same selection (``is_html``, status 200, same payload decoding) on warcio records;
- ``read_warc``: the full reader (FastWARC + charset decoding + Arrow batches);
- ``datatrove process_record``: datatrove's WarcReader record function (warcio + cchardet + libmagic), for
  reference; it selects differently (no status filter, libmagic sniffing when no identified type).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from warcio.archiveiterator import ArchiveIterator as WarcioIterator

from bench.common import machine_info, markdown_table, realdata_dir, write_result
from pipeline.sources.warc import (
    _SNIFF_BYTES,
    _UNKNOWN_TYPES,
    HtmlRecord,
    clean_url,
    is_html,
    iter_html_records,
    media_type,
    read_warc,
)

log = logging.getLogger("bench.warc_readers")


def warcio_html_records(path: Path, counters: Counter[str]) -> Iterator[HtmlRecord]:
    """The selection of ``iter_html_records`` on warcio records (warcio undoes chunking and gzip itself)."""
    with open(path, "rb") as f:
        for record in WarcioIterator(f):
            counters["records"] += 1
            if record.rec_type != "response":
                continue
            if record.http_headers is None:
                continue
            content_type = record.http_headers.get_header("Content-Type")
            identified = record.rec_headers.get_header("WARC-Identified-Payload-Type")
            stream = record.content_stream()
            head = None
            if media_type(identified) in _UNKNOWN_TYPES and media_type(content_type) in _UNKNOWN_TYPES:
                head = stream.read(_SNIFF_BYTES)
            if not is_html(identified, content_type, head):
                continue
            if record.http_headers.get_statuscode() != "200":
                continue
            payload = (head or b"") + stream.read()
            yield HtmlRecord(
                record_id=record.rec_headers.get_header("WARC-Record-ID") or "",
                url=clean_url(record.rec_headers.get_header("WARC-Target-URI")),
                date=record.rec_headers.get_header("WARC-Date"),
                content_type=content_type,
                payload=payload,
                complete=True,
            )


def datatrove_records(path: Path, counters: Counter[str]) -> Iterator[dict]:
    from datatrove.pipeline.readers.warc import process_record

    with open(path, "rb") as f:
        for record in WarcioIterator(f):
            counters["records"] += 1
            doc = process_record(record)
            if doc:
                yield doc


def fastwarc_records(path: Path, counters: Counter[str]) -> Iterator[HtmlRecord]:
    return iter_html_records(path, counters, label=path.name)


def read_warc_rows(path: Path, counters: Counter[str]) -> Iterator[int]:
    for batch in read_warc(path, dump="bench", warc_path=path.name, counters=counters):
        yield from range(batch.num_rows)


def fingerprint(record: HtmlRecord) -> tuple[str, str | None, str]:
    return record.record_id, record.url, hashlib.sha1(record.payload).hexdigest()


def measure(
    files: list[Path], reader: Callable[[Path, Counter[str]], Iterator[object]], repeat: int
) -> tuple[float, int, int]:
    """Best wall time over ``repeat`` passes over all files; records seen and items yielded."""
    best = float("inf")
    records = items = 0
    for _ in range(repeat):
        counters: Counter[str] = Counter()
        start = time.perf_counter()
        n = 0
        for path in files:
            for _item in reader(path, counters):
                n += 1
        best = min(best, time.perf_counter() - start)
        records, items = counters["records"], n
    return best, records, items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="passes per reader; the best is reported")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    folder = realdata_dir() / "warc_samples"
    files = sorted(p for p in folder.glob("*.warc*") if not p.name.endswith((".wet.gz", ".wat.gz")))
    total_mb = sum(p.stat().st_size for p in files) / 1e6

    mismatches = []
    for path in files:
        fast = [fingerprint(r) for r in fastwarc_records(path, Counter())]
        slow = [fingerprint(r) for r in warcio_html_records(path, Counter())]
        if fast != slow:
            mismatches.append(f"{path.name}: fastwarc {len(fast)} records, warcio {len(slow)}")
    for line in mismatches:
        log.error("different records: %s", line)

    # warm up imports and page cache before timing
    measure(files, read_warc_rows, 1)
    rows = []
    for name, reader in [
        ("fastwarc select", fastwarc_records),
        ("warcio select", warcio_html_records),
        ("read_warc (fastwarc + decode + Arrow)", read_warc_rows),
        ("datatrove process_record (warcio)", datatrove_records),
    ]:
        seconds, records, items = measure(files, reader, args.repeat)
        rows.append([name, records, items, seconds * 1000, records / seconds, total_mb / seconds, items / seconds])
    base = rows[1][4]
    for row in rows:
        row.append(row[4] / base)
    table = markdown_table(
        ["reader", "records", "HTML docs", "ms", "records/s", "MB/s (gz)", "docs/s", "vs warcio"], rows
    )
    same = "identical" if not mismatches else "DIFFERENT: " + "; ".join(mismatches)
    text = (
        "# WARC readers\n\n"
        f"{len(files)} files, {total_mb:.1f} MB compressed, best of {args.repeat} passes.\n"
        f"Machine: {machine_info()}.\n\n"
        f"{table}\n\nRecords selected by FastWARC and warcio (id, url, sha1 of payload): {same}.\n"
    )
    print(text)
    write_result("warc_readers.md", text)


if __name__ == "__main__":
    main()
