"""URL filter: same decisions and reasons as datatrove's URLFilter on real and crafted URLs, extras, the cache."""

from __future__ import annotations

import io
import itertools
import multiprocessing
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from filters.config import UrlFilterConfig
from filters.url import (
    BLOCKLIST_TARBALL,
    DOMAINS_FILE,
    UrlFilterStage,
    _load_tarball_lists,
    _registered_domain,
    assets_dir,
    hash_domain,
    load_block_lists,
    tld_extractor,
)
from pipeline.core.stage import run_chain
from pipeline.core.stats import PartStats

pytestmark = pytest.mark.filterwarnings("ignore:The 'registered_domain' property is deprecated:DeprecationWarning")

RULES = {"domain", "subdomain", "url", "hard_blacklisted", "soft_blacklisted", "blacklisted_subword"}


def _table(urls: list[str | None]) -> pa.Table:
    return pa.table({"id": [f"r{i}" for i in range(len(urls))], "url": pa.array(urls, pa.string())})


def _reasons(urls: list[str | None], config: UrlFilterConfig | None = None) -> list[str | None]:
    return UrlFilterStage(config or UrlFilterConfig())(_table(urls)).column("drop_reason").to_pylist()


@pytest.fixture(scope="module")
def warc_urls(realdata: Path) -> list[str]:
    from warcio.archiveiterator import ArchiveIterator

    folder = realdata / "warc_samples"
    if not folder.is_dir():
        pytest.skip(f"WARC samples not found at {folder}")
    urls: dict[str, None] = {}
    for path in sorted(folder.glob("*.warc*.gz")):
        with open(path, "rb") as f:
            for record in ArchiveIterator(f):
                uri = record.rec_headers.get_header("WARC-Target-URI")
                if uri:
                    urls[uri] = None
    assert len(urls) > 400
    return list(urls)


def _shipped_lines(name: str) -> Iterator[str]:
    with tarfile.open(assets_dir() / BLOCKLIST_TARBALL, "r:gz") as tar:
        for member in tar:
            if member.name == name:
                yield from (line.strip() for line in io.TextIOWrapper(tar.extractfile(member), encoding="utf-8"))


@pytest.fixture(scope="module")
def shipped() -> dict[str, list[str]]:
    """A deterministic spread of the shipped domain list, entries that are subdomains, and shipped URLs."""
    extractor = tld_extractor()
    spread, subdomains = [], []
    for i, domain in enumerate(_shipped_lines("domains")):
        if i % 40_000 == 0:
            spread.append(domain)
        if i % 997 == 0 and len(subdomains) < 60 and _registered_domain(extractor(domain)) not in ("", domain):
            subdomains.append(domain)
    urls = list(itertools.islice(_shipped_lines("urls"), 0, 19_000, 950))
    assert len(spread) > 100 and len(subdomains) >= 30 and len(urls) >= 15
    return {"domains": spread, "subdomains": subdomains, "urls": urls}


@pytest.fixture(scope="module")
def crafted(shipped: dict[str, list[str]]) -> dict[str, list[str]]:
    lists = load_block_lists()
    soft = sorted(lists.soft_banned_words)
    domains = shipped["domains"] + shipped["subdomains"]
    return {
        "listed": [f"https://{d}/" for d in shipped["domains"]],
        "listed_sub": [f"https://{d}/" for d in shipped["subdomains"]],
        "listed_variants": [
            u
            for d in domains[::3]
            for u in (f"http://www.{d}/index.html", f"https://user:pw@shop.{d}:8443/a?b=c#f", f"HTTP://{d.upper()}/")
        ],
        "shipped_urls": shipped["urls"] + [f"http://{u}" for u in shipped["urls"]],
        "banned": [f"https://example.com/{w}-videos?page=2" for w in sorted(lists.banned_words)],
        "banned_upper": [f"https://example.com/{w.upper()}" for w in sorted(lists.banned_words)[:30]],
        "soft_two": [f"https://news.example.org/{a}/{b}.html" for a, b in zip(soft[:40:2], soft[1:40:2], strict=True)],
        "soft_one": [f"https://news.example.org/{a}.html" for a in soft[:40]],
        "subwords": [f"https://example.net/x{w}y" for w in sorted(lists.banned_subwords)],
        "odd": [
            "http://",
            "not a url",
            "dns:ia360602.us.archive.org",
            "mailto:someone@example.com",
            "http://127.0.0.1/porn",
            "http://[::1]:8080/a",
            "http://localhost:8080/",
            "https://例え.テスト/パス",
            "https://xn--r8jz45g.xn--zckzah/",
            "http://example.com./",
            "//cdn.example.com/x.js",
            "http://a..b/c",
            "https://example.com/" + "a" * 20_000,
            "https://example.com/a b c",
        ],
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """datatrove's URLFilter on the same lists: its tarball extracted into a temp dir, our offline tldextract."""
    from datatrove.pipeline.filters import url_filter

    target = tmp_path_factory.mktemp("datatrove-assets")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(url_filter, "cached_assets_path", lambda **_: str(target))
        ref = url_filter.URLFilter()
        ref.tldextractor = tld_extractor()  # its default would fetch the public suffix list
        ref.download_data()
        yield ref


def _theirs(ref: object, urls: list[str]) -> list[str | None]:
    from datatrove.data import Document

    out: list[str | None] = []
    for i, url in enumerate(urls):
        result = ref.filter(Document(text="", id=str(i), metadata={"url": url}))
        out.append(None if result is True else result[1])
    return out


def test_parity_with_datatrove(warc_urls: list[str], crafted: dict[str, list[str]], reference: object) -> None:
    urls = warc_urls + [u for group in crafted.values() for u in group]
    ours = _reasons(urls)
    theirs = _theirs(reference, urls)
    mismatches = [(u[:100], o, t) for u, o, t in zip(urls, ours, theirs, strict=True) if o != t]
    assert not mismatches, mismatches[:10]
    assert set(ours) - {None} == RULES  # every rule fired somewhere, so each one was compared


def test_rules_on_crafted_urls(warc_urls: list[str], crafted: dict[str, list[str]]) -> None:
    assert all(r is None for r in _reasons(warc_urls))  # archive.org, iana.org, gov.uk...: nothing blocked
    listed = _reasons(crafted["listed"])
    assert set(listed) <= {"domain", "subdomain"} and listed.count("domain") >= 10
    # Entries with a subdomain block that host (rule subdomain) unless their registered domain is listed too.
    assert set(_reasons(crafted["listed_sub"])) <= {"domain", "subdomain"}
    assert _reasons(crafted["listed_sub"]).count("subdomain") >= 10
    assert "url" in _reasons(crafted["shipped_urls"])
    assert set(_reasons(crafted["banned"])) == {"hard_blacklisted"}
    assert set(_reasons(crafted["soft_two"])) == {"soft_blacklisted"}
    assert set(_reasons(crafted["subwords"])) == {"blacklisted_subword"}
    # One soft-banned word is not enough; uppercase words only meet the (lowercasing) subword rule.
    assert "soft_blacklisted" not in _reasons(crafted["soft_one"])
    assert "hard_blacklisted" not in _reasons(crafted["banned_upper"])
    # Words are split case-sensitively against lowercase lists (datatrove's behaviour, kept for parity).
    urls = ["https://www.iana.org/domains/reserved", "https://en.wikipedia.org/wiki/porn", "https://x.org/wiki/Porn"]
    assert _reasons(urls) == [None, "hard_blacklisted", None]


def test_soft_word_threshold(crafted: dict[str, list[str]]) -> None:
    two = crafted["soft_two"]
    assert set(_reasons(two, UrlFilterConfig(soft_word_threshold=3))) <= {None, "blacklisted_subword"}
    assert "soft_blacklisted" in _reasons(crafted["soft_one"], UrlFilterConfig(soft_word_threshold=1))


def test_extras() -> None:
    config = UrlFilterConfig(
        extra_domains=["example.org", "blog.example.net", "# a comment"],
        extra_urls=["https://example.com/exact?x=1"],
        extra_banned_words=["Forbidden-Fruit"],
    )
    urls = [
        "https://example.org/",
        "http://a.b.example.org/page",
        "https://blog.example.net/post",
        "https://example.net/",
        "https://example.com/exact?x=1",
        "https://example.com/exact?x=2",
        "https://example.com/forbiddenfruit/tree",
        "https://example.com/forbidden/fruit",
    ]
    assert _reasons(urls, config) == ["domain", "domain", "subdomain", None, "url", None, "hard_blacklisted", None]
    assert _reasons(urls) == [None] * len(urls)


def test_extras_match_datatrove(reference: object) -> None:
    from datatrove.pipeline.filters.url_filter import URLFilter

    config = UrlFilterConfig(extra_domains=["example.org", "blog.example.net"], extra_urls=["https://example.com/x"])
    ref = URLFilter(extra_domains=config.extra_domains, extra_urls=config.extra_urls)
    ref.tldextractor = tld_extractor()
    ref.block_listed_domains |= reference.block_listed_domains  # the shipped lists, already loaded once
    ref.block_listed_url |= reference.block_listed_url
    ref.banned_words, ref.soft_banned_words = reference.banned_words, reference.soft_banned_words
    ref.banned_subwords, ref.banned_subwords_automaton = reference.banned_subwords, reference.banned_subwords_automaton
    ref._downloaded = True
    urls = [
        "https://example.org/a",
        "https://x.blog.example.net/",
        "https://blog.example.net/",
        "https://example.com/x",
    ]
    assert _reasons(urls, config) == _theirs(ref, urls) == ["domain", None, "subdomain", "url"]


def test_stage_contract() -> None:
    urls = ["https://pornhub.com/view", None, "", "https://www.iana.org/"]
    stats = PartStats("p")
    kept, rejected = run_chain([UrlFilterStage(UrlFilterConfig())], _table(urls), stats)
    assert kept.column("url").to_pylist() == ["https://www.iana.org/"]
    assert dict(stats.stage("url_filter").drops) == {"url_filter:domain": 1, "url_filter:missing_url": 2}
    assert rejected[0].column("drop_stage").to_pylist() == ["url_filter"] * 3
    off = UrlFilterStage(UrlFilterConfig(enabled=False))(_table(urls))
    assert off.column("drop_reason").null_count == len(urls)
    with pytest.raises(ValueError, match="needs a 'url' column"):
        UrlFilterStage()(pa.table({"id": ["a"]}))


def _write_assets(folder: Path, domains: list[str], urls: list[str]) -> Path:
    """A tiny stand-in for datatrove's assets: same file names and tarball layout."""
    folder.mkdir(parents=True)
    with tarfile.open(folder / BLOCKLIST_TARBALL, "w:gz") as tar:
        for name, lines in (("urls", urls), ("domains", domains)):
            data = "".join(line + "\n" for line in lines).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (folder / "banned_words.txt").write_text("#comment\nbadword\n")
    (folder / "banned_subwords.txt").write_text("bad sub\n")
    (folder / "soft_banned_words.txt").write_text("soft\n")
    return folder


def _load_hashes(args: tuple[str, str]) -> list[int]:
    import os

    assets, cache = args
    os.environ["CC_REFINERY_CACHE_DIR"] = cache
    return [int(h) for h in _load_tarball_lists(Path(assets) / BLOCKLIST_TARBALL)[0]]


def test_cache_is_built_once_and_safely(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    domains = [f"site{i}.example" for i in range(5000)] + ["#not.a.domain", "  spaced.example  "]
    assets = _write_assets(tmp_path / "assets", domains, ["blocked.example/page"])
    cache = tmp_path / "cache"
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(3) as pool:  # three workers starting at once race to build the same cache
        results = pool.map(_load_hashes, [(str(assets), str(cache))] * 3)
    assert results[0] == results[1] == results[2]
    expected = sorted(hash_domain(d) for d in [*domains[:5000], "spaced.example"])
    assert results[0] == expected
    built = list((cache / "url_filter").iterdir())
    assert len(built) == 1 and (built[0] / DOMAINS_FILE).is_file()  # no temporary folders left behind

    monkeypatch.setenv("CC_REFINERY_CACHE_DIR", str(cache))
    lists = load_block_lists(assets)
    assert lists.urls == {"blocked.example/page"} and lists.banned_words == {"badword"}
    assert lists.banned_subwords == {"badsub"}
    hits = lists.domains_contain(np.array([hash_domain("site42.example"), hash_domain("other.example")], np.uint64))
    assert hits.tolist() == [True, False]


def test_unwritable_cache_falls_back_to_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assets = _write_assets(tmp_path / "assets", ["a.example", "b.example"], [])
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("")
    monkeypatch.setenv("CC_REFINERY_CACHE_DIR", str(blocker / "sub"))
    hashes, urls = _load_tarball_lists(assets / BLOCKLIST_TARBALL)
    assert sorted(int(h) for h in hashes) == sorted(hash_domain(d) for d in ["a.example", "b.example"])
    assert urls == set()


def test_host_cache_overflow_keeps_answers(monkeypatch: pytest.MonkeyPatch, crafted: dict[str, list[str]]) -> None:
    urls = crafted["listed"][:40] + crafted["banned"][:10] + [f"https://site{i}.example.com/" for i in range(40)]
    expected = _reasons(urls)
    monkeypatch.setattr("filters.url.HOST_CACHE_SIZE", 30)  # smaller than one batch: cleared on every call
    config = UrlFilterConfig(soft_word_threshold=2, extra_domains=["site7.example.com"])
    first, second = _reasons(urls, config), _reasons(urls, config)
    assert first == second
    assert [r for i, r in enumerate(first) if i != 57] == [r for i, r in enumerate(expected) if i != 57]
    assert first[57] == "subdomain" and expected[57] is None


def test_corrupt_tarball_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assets = _write_assets(tmp_path / "assets", ["a.example"], [])
    tarball = assets / BLOCKLIST_TARBALL
    tarball.write_bytes(tarball.read_bytes()[:40])  # truncated gzip
    monkeypatch.setenv("CC_REFINERY_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="is unreadable"):
        _load_tarball_lists(tarball)
    assert list((tmp_path / "cache" / "url_filter").iterdir()) == []  # nothing half-built left behind
