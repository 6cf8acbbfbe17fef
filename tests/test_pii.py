"""The PII stage against datatrove's ``PIIFormatter``: real documents and planted cases, counts and stats."""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest
from datatrove.pipeline.formatters import PIIFormatter

from filters.config import PiiConfig
from filters.pii import PiiStage, email_windows
from pipeline.core.parts import load_stats, read_documents
from pipeline.core.stage import run_chain
from pipeline.core.stats import PartStats, merge_parts


def real_documents(realdata: Path) -> list[str]:
    """Texts from ../shared/realdata: article bodies, Common Crawl texts and WET, sentences of 75 languages."""
    docs = [
        v["articleBody"] for v in json.loads((realdata / "extraction_aeb" / "ground-truth.json").read_text()).values()
    ]
    for path in sorted((realdata / "cc_text_samples").glob("*.jsonl.gz")):
        lines = gzip.decompress(path.read_bytes()).decode("utf-8").splitlines()
        docs += [json.loads(line)["text"] for line in lines if line.strip()]
    wet = realdata / "warc_samples" / "cc-main-2024-22_whirlwind.warc.wet.gz"
    docs.append(gzip.decompress(wet.read_bytes()).decode("utf-8", "replace"))  # Common Crawl's text, headers too
    for path in sorted((realdata / "langid_lingua" / "sentences").glob("*.txt")):
        docs.append(path.read_text(encoding="utf-8"))
    return docs


def warc_html(realdata: Path) -> list[str]:
    """The decoded HTML of every HTML record of the real WARC samples (as the reader hands it to extraction)."""
    from pipeline.sources.warc import read_warc

    html: list[str] = []
    for path in sorted((realdata / "warc_samples").glob("*.warc.gz")):
        for batch in read_warc(path, dump="real", warc_path=path.name, counters=Counter(), batch_size=1000):
            html += batch.column("html").to_pylist()
    return html


def extracted_warc_texts(realdata: Path) -> list[str]:
    """Text trafilatura extracts from the genuine Common Crawl records (the others cost too long to extract here)."""
    from pipeline.sources.warc import read_warc
    from pipeline.stages.config import ExtractionConfig
    from pipeline.stages.extraction import ExtractStage

    texts: list[str] = []
    for name in (
        "cc-main-2020-34_excerpt.warc.gz",
        "cc-main-2024-22_whirlwind.warc.gz",
        "cc-2019_single-record.warc.gz",
    ):
        path = realdata / "warc_samples" / name
        for batch in read_warc(path, dump="real", warc_path=name, counters=Counter(), batch_size=1000):
            out = ExtractStage(ExtractionConfig())(batch)
            texts += [t for t in out.column("text").to_pylist() if t]
    return texts


def datatrove_counts(text: str, **formatter_args: object) -> tuple[str, int, int]:
    """What a fresh datatrove formatter writes, and how many emails and IPs it replaced (counted by its checks)."""
    formatter = PIIFormatter(**formatter_args)
    counts = Counter()

    def counted(kind: str, check: Callable[[str], bool] | None) -> Callable[[str], bool]:
        def valid(match: str) -> bool:
            ok = check is None or check(match)
            counts[kind] += ok
            return ok

        return valid

    formatter.emails_replacer.validator = counted("email", formatter.emails_replacer.validator)
    formatter.ip_replacer.validator = counted("ip", formatter.ip_replacer.validator)
    return formatter.format(text), counts["email"], counts["ip"]


def run_stage(texts: list[str | None], config: PiiConfig | None = None) -> tuple[list[str | None], PartStats]:
    stats = PartStats("test")
    kept, _ = run_chain(
        [PiiStage(config or PiiConfig())], pa.table({"text": pa.array(texts, pa.large_string())}), stats
    )
    assert kept.column_names == ["text"], "the count columns stay inside run_chain"
    return kept.column("text").to_pylist(), stats


def check_parity(texts: list[str], config: PiiConfig | None = None, **formatter_args: object) -> tuple[int, int]:
    """Every text comes out as a fresh PIIFormatter writes it; the stage's counts are datatrove's replacements."""
    ours, stats = run_stage(texts, config)
    emails = ips = 0
    for i, (text, out) in enumerate(zip(texts, ours, strict=True)):
        expected, n_email, n_ip = datatrove_counts(text, **formatter_args)
        assert out == expected, f"document {i} differs from datatrove: {text[:200]!r}"
        emails, ips = emails + n_email, ips + n_ip
    counts = stats.stage("pii").counts
    assert (counts["pii:email"], counts["pii:ip"]) == (emails, ips)
    return emails, ips


@pytest.fixture(scope="module")
def documents(realdata: Path) -> list[str]:
    return real_documents(realdata) + extracted_warc_texts(realdata)


@pytest.fixture(scope="module")
def html(realdata: Path) -> list[str]:
    return [h for h in warc_html(realdata) if h]


def test_real_documents_match_datatrove(documents: list[str], html: list[str]) -> None:
    """Every real text and every raw WARC page (mailto: links, scripts, version strings) as datatrove writes it."""
    emails, ips = check_parity(documents + html)
    assert len(documents) > 200 and len(html) > 150
    assert emails > 100 and ips > 30, "the real documents hold addresses to replace"


def test_real_documents_match_one_datatrove_formatter_over_the_whole_stream(documents: list[str]) -> None:
    """datatrove turns its replacements across documents; with one replacement each, the stream is identical."""
    formatter = PIIFormatter(email_replacement="e@example.com", ip_replacement="1.1.1.1")
    expected = [formatter.format(t) for t in documents]
    one = PiiConfig(email_replacements=("e@example.com",), ip_replacements=("1.1.1.1",))
    assert run_stage(documents, one)[0] == expected


PLANTED = [
    "write to john.doe@gmail.com today",
    "a@b.co, first.last+tag@sub.example.co.uk; o'brien@example.ie and {weird}!#$%&'*+/=?^_`|~-@x.io",
    "three: a@x.com b@x.com c@x.com (replacements in turn)",
    "not emails: user@localhost, @handle, a@b, a@-b.com, a@b-.com, a..b@x.com, trailing@dot.com.",
    "user@[192.168.0.1] and user@[IPv6:2001:db8::1] and user@[8.8.8.8]",
    "user@@double.com x@y@z.com mailto:jane@example.org?subject=hi",
    "José@example.com éa@example.com é!!@example.com ünï@example.com 中文@example.com",
    "tabs\tsep@example.com\tand\u00a0nbsp@example.com\u2003em@example.com",
    '<a href="mailto:info@company.de">info@company.de</a>',
    "public 8.8.8.8, 1.1.1.1 and 93.184.216.34; private 10.0.0.1 172.16.5.4 192.168.1.1",
    "loopback 127.0.0.1, any 0.0.0.0, broadcast 255.255.255.255, link-local 169.254.1.1",
    "shared 100.64.0.1, docs 192.0.2.1 198.51.100.7 203.0.113.9, benchmark 198.18.0.1, multicast 224.0.0.1",
    "reserved 240.0.0.1, 192.0.0.8, 192.88.99.1 and a leading zero 08.08.08.08 or 010.1.1.1",
    "versions: v1.2.3.4, 2.0.0.1-beta, 10.0.0.19045, Chrome 120.0.6099.109, build 1.2.3.4.5.6",
    "digits around: 1234.5.6.7 and 256.1.1.1 and 1.2.3.256 and 99999.8.8.8.8",
    "IPv6 is left: 2001:4860:4860::8888, ::1, fe80::1, ::ffff:8.8.8.8",
    "mixed: root@8.8.8.8 ssh admin@192.168.1.1 then 8.8.4.4:53 and http://8.8.8.8/path",
    "",
    "no pii at all, just text with 3.14 and 1.2.3",
]


def test_planted_cases_match_datatrove() -> None:
    emails, ips = check_parity(PLANTED)
    assert emails >= 15 and ips >= 10


def test_planted_cases_as_expected() -> None:
    out, _ = run_stage(PLANTED)
    assert out[0] == "write to email@example.com today"
    assert out[2] == "three: email@example.com firstname.lastname@example.org email@example.com (replacements in turn)"
    kept = ("10.0.0.1", "172.16.5.4", "192.168.1.1", "127.0.0.1", "0.0.0.0", "169.254.1.1", "100.64.0.1",
            "192.0.2.1", "198.18.0.1", "08.08.08.08", "2001:4860:4860::8888", "fe80::1")  # fmt: skip
    everything = "\n".join(o or "" for o in out)
    for address in kept:
        assert address in everything, address
    for address in ("8.8.8.8", "1.1.1.1", "93.184.216.34", "john.doe@gmail.com", "info@company.de"):
        assert address not in everything, address
    assert out[-1] == PLANTED[-1] and out[-2] == ""


def test_options_match_datatrove() -> None:
    check_parity(PLANTED, PiiConfig(only_public_ips=False), only_remove_public_ips=False)
    check_parity(PLANTED, PiiConfig(kinds=("email",)), remove_ips=False)
    check_parity(PLANTED, PiiConfig(kinds=("ip",)), remove_emails=False)
    swapped = PiiConfig(email_replacements=("x@example.net",), ip_replacements=("9.9.9.9", "4.4.4.4"))
    check_parity(PLANTED, swapped, email_replacement="x@example.net", ip_replacement=("9.9.9.9", "4.4.4.4"))


def test_email_windows_cover_every_match(documents: list[str]) -> None:
    """Matching only around each ``@`` finds what matching the whole text finds."""
    pattern = PIIFormatter().emails_replacer.regex
    for text in [*PLANTED, *documents]:
        if "@" not in text:
            continue
        windowed = [m.group(0) for s, e in email_windows(text) for m in pattern.finditer(text[s:e])]
        assert windowed == [m.group(0) for m in pattern.finditer(text)]


def test_nulls_empty_tables_and_no_text_column() -> None:
    assert run_stage([None, "a@b.com", None])[0] == [None, "email@example.com", None]
    assert run_stage([])[0] == []
    table = pa.table({"id": ["1"]})
    assert PiiStage()(table).equals(table)


def test_counts_add_up_over_parts_and_survive_json() -> None:
    parts = [run_stage(["a@x.com 8.8.8.8", "10.0.0.1"])[1], run_stage(["b@x.com c@x.com"])[1]]
    for part in parts:
        part.part = f"p{id(part)}"
    total = merge_parts([PartStats.from_json(json.loads(json.dumps(p.to_json()))) for p in parts])
    assert dict(total.stage("pii").counts) == {"pii:email": 3, "pii:ip": 1}
    assert total.stage("pii").docs_in == total.stage("pii").docs_out == 3


def test_pii_is_the_last_stage_of_the_warc_pass_and_can_be_turned_off() -> None:
    from pipeline.app.config import load_config
    from pipeline.app.warc import build_stage, stage_names, warc_stages

    config = load_config()
    assert [s.name for s in warc_stages(config)][-1] == "pii"
    assert "pii" in stage_names() and isinstance(build_stage("pii", config), PiiStage)
    assert "pii" not in [s.name for s in warc_stages(load_config(overrides={"pii.enabled": False}))]
    only = warc_stages(load_config(overrides={"pii.kinds": ["ip"]}))[-1]
    assert [kind for kind, _ in only.replacers] == ["ip"]


def test_sample_run_counts_replacements_in_stats_and_report(sample_run) -> None:  # noqa: ANN001
    stats = merge_parts(load_stats(sample_run.run_dir))
    pii = stats.stage("pii")
    assert set(pii.counts) == {"pii:email", "pii:ip"}
    assert pii.docs_in == pii.docs_out > 0
    texts = read_documents(sample_run.run_dir).column("text").to_pylist()
    email = re.compile(PIIFormatter().emails_replacer.regex.pattern)
    left = [m.group(0) for t in texts for m in email.finditer(t)]
    assert set(left) <= {"email@example.com", "firstname.lastname@example.org"}, "no original email survives"
    assert len(left) == pii.counts["pii:email"]
    report = json.loads((sample_run.run_dir / "report" / "report.json").read_text())
    rows = {row["key"]: row["count"] for row in report["counts"]}
    assert rows == dict(pii.counts)
    assert 'id="counts"' in (sample_run.run_dir / "report" / "index.html").read_text()
