"""FineWeb's URL filter: the lists datatrove ships, datatrove ``URLFilter``'s rules, order and rule names.

Rules, first match wins: ``domain`` (registered domain blocklisted), ``subdomain`` (full host blocklisted),
``url`` (exact URL blocklisted), ``hard_blacklisted`` (a banned word among the URL's words),
``soft_blacklisted`` (at least ``soft_word_threshold`` soft-banned words), ``blacklisted_subword`` (a banned
subword inside the lowercased, alphanumeric-only URL). Rows without a URL are dropped as ``missing_url``.

The UT1 domain list has 4.6 million entries; as a Python set it costs ~700 MB and ~3 s in every worker.
We keep it instead as a sorted array of 64-bit xxh3 hashes (36 MB), built once per machine into the user
cache and memory-mapped, so workers share it through the page cache and start in milliseconds. A false
hit needs a 64-bit collision with one of 4.6 M entries: about 2.5e-13 per lookup.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import logging
import os
import re
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import xxhash

from filters.config import UrlFilterConfig
from pipeline.core.cache import cache_root
from pipeline.core.stage import with_drop_reasons

log = logging.getLogger(__name__)

BLOCKLIST_TARBALL = "url_filterblacklistsv0_3_0.tar.gz"
CACHE_FORMAT = "v1"
DOMAINS_FILE = "domains.u64.npy"
URLS_FILE = "urls.txt"
HOST_CACHE_SIZE = 200_000
"""Hosts whose block decision a process remembers (about 40 MB at most)."""

_NORMALIZER = re.compile(r"[^a-zA-Z0-9]+")
"""datatrove's: ASCII letters and digits are word characters, everything else separates words."""


def normalize(text: str) -> str:
    """Letters and digits only, lowercased (how datatrove compares words and subwords)."""
    return _NORMALIZER.sub("", text).lower()


def parse_list(lines: Iterable[str], do_normalize: bool = True) -> set[str]:
    """datatrove's list parsing: skip lines starting with ``#``; normalize words, strip domains and URLs."""
    return {normalize(x) if do_normalize else x.strip() for x in lines if x and x[0] != "#"}


def assets_dir() -> Path:
    """datatrove's ``assets`` folder, found without importing datatrove (Spark executors need not load it)."""
    spec = importlib.util.find_spec("datatrove")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("datatrove is not installed; the URL filter's block lists ship with it")
    return Path(next(iter(spec.submodule_search_locations))) / "assets"


def hash_domain(domain: str) -> int:
    return xxhash.xxh3_64_intdigest(domain.encode("utf-8", "surrogatepass"))


@dataclass(frozen=True)
class BlockLists:
    """The shipped lists, parsed as datatrove parses them (domains as sorted xxh3 hashes)."""

    domain_hashes: np.ndarray
    urls: frozenset[str]
    banned_words: frozenset[str]
    banned_subwords: frozenset[str]
    soft_banned_words: frozenset[str]

    def domains_contain(self, hashes: np.ndarray) -> np.ndarray:
        """Membership of each hash in the domain list, vectorised."""
        table = self.domain_hashes
        if len(table) == 0 or len(hashes) == 0:
            return np.zeros(len(hashes), dtype=bool)
        idx = np.minimum(np.searchsorted(table, hashes), len(table) - 1)
        return table[idx] == hashes


@lru_cache(maxsize=4)
def load_block_lists(assets: Path | None = None) -> BlockLists:
    """The lists from datatrove's assets, once per process; the domain hashes come from the on-disk cache."""
    folder = Path(assets) if assets is not None else assets_dir()
    domain_hashes, urls = _load_tarball_lists(folder / BLOCKLIST_TARBALL)
    return BlockLists(
        domain_hashes=domain_hashes,
        urls=frozenset(urls),
        banned_words=frozenset(_read_list(folder / "banned_words.txt")),
        banned_subwords=frozenset(_read_list(folder / "banned_subwords.txt")),
        soft_banned_words=frozenset(_read_list(folder / "soft_banned_words.txt")),
    )


def _read_list(path: Path, do_normalize: bool = True) -> set[str]:
    with open(path, encoding="utf-8") as f:
        return parse_list(f, do_normalize)


def _load_tarball_lists(tarball: Path) -> tuple[np.ndarray, set[str]]:
    """Domain hashes and exact URLs from the cache folder named after the tarball's content, built if missing."""
    if not tarball.is_file():
        raise FileNotFoundError(f"URL block list {tarball} not found (it ships with datatrove's assets)")
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()[:16]
    folder = cache_root() / "url_filter" / f"{CACHE_FORMAT}-{digest}"
    if not (folder / DOMAINS_FILE).is_file():
        try:
            _build_cache(tarball, folder)
        except OSError as e:
            log.warning("cannot write the URL block list cache %s (%s); keeping it in memory", folder, e)
            hashes, urls = _parse_tarball(tarball)
            return hashes, urls
    try:
        hashes = np.load(folder / DOMAINS_FILE, mmap_mode="r")
        urls = _read_list(folder / URLS_FILE, do_normalize=False)
    except (OSError, ValueError) as e:
        log.warning("URL block list cache %s is unreadable (%s); delete it to rebuild. Parsing in memory", folder, e)
        return _parse_tarball(tarball)
    return hashes, urls


def _build_cache(tarball: Path, folder: Path) -> None:
    """Write the cache into a temporary sibling, then rename it into place: atomic, safe under races."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    log.info("building the URL block list cache %s from %s", folder, tarball)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is plain public data
        hashes, urls = _parse_tarball(tarball)
        np.save(tmp / DOMAINS_FILE, hashes)
        (tmp / URLS_FILE).write_text("".join(u + "\n" for u in sorted(urls)), encoding="utf-8")
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / DOMAINS_FILE).is_file():  # not a lost race: a real error
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _parse_tarball(tarball: Path) -> tuple[np.ndarray, set[str]]:
    """Stream the tarball once: hash every domain line (no 4.6 M-string set), keep the URL lines."""
    hashes = np.zeros(0, dtype=np.uint64)
    urls: set[str] = set()
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            for member in tar:
                handle = tar.extractfile(member)
                if handle is None:
                    continue
                lines = io.TextIOWrapper(handle, encoding="utf-8")
                if member.name.rsplit("/", 1)[-1] == "domains":
                    hashes = np.fromiter((hash_domain(d) for d in _list_entries(lines)), dtype=np.uint64)
                elif member.name.rsplit("/", 1)[-1] == "urls":
                    urls = parse_list(lines, do_normalize=False)
    except (tarfile.TarError, EOFError, zlib.error, UnicodeDecodeError) as e:
        raise ValueError(f"URL block list {tarball} is unreadable ({e}); reinstall datatrove") from e
    if len(hashes) == 0:
        raise ValueError(f"{tarball} has no 'domains' list")
    hashes.sort()
    return hashes, urls


def _list_entries(lines: Iterable[str]) -> Iterator[str]:
    for x in lines:
        if x and x[0] != "#":
            yield x.strip()


@lru_cache(maxsize=1)
def tld_extractor() -> Any:
    """A tldextract that never touches the network: the public suffix snapshot bundled with the package."""
    from tldextract import TLDExtract

    return TLDExtract(suffix_list_urls=(), cache_dir=None)


def _registered_domain(info: Any) -> str:
    # tldextract 5.3 renamed registered_domain (what datatrove reads); same value.
    value = getattr(info, "top_domain_under_public_suffix", None)
    return info.registered_domain if value is None else value


@dataclass(frozen=True)
class UrlRules:
    """Shipped lists plus a config's extras, ready to match (the subword automaton built once)."""

    lists: BlockLists
    extra_domains: frozenset[str]
    urls: frozenset[str]
    banned_words: frozenset[str]
    soft_banned_words: frozenset[str]
    soft_word_threshold: int
    subwords: Any  # ahocorasick.Automaton, or None when there are no subwords
    host_cache: dict[str, tuple[bool, bool]] = field(default_factory=dict, compare=False, repr=False)

    def reasons(self, urls: Sequence[str | None]) -> list[str | None]:
        """The first rule that blocks each URL, or None to keep it."""
        from tldextract.remote import lenient_netloc

        keys = [lenient_netloc(url) if url else "" for url in urls]
        blocked = self._hosts_blocked(urls, keys)
        out: list[str | None] = []
        for url, key in zip(urls, keys, strict=True):
            if not url:
                out.append("missing_url")
                continue
            domain_hit, fqdn_hit = blocked[key]
            if domain_hit:
                out.append("domain")
            elif fqdn_hit:
                out.append("subdomain")
            else:
                out.append(self._url_reason(url))
        return out

    def _hosts_blocked(self, urls: Sequence[str | None], keys: list[str]) -> dict[str, tuple[bool, bool]]:
        """(registered domain blocked, full host blocked) per distinct host.

        tldextract only looks at the host (``lenient_netloc``), so its answer for one URL holds for every URL
        with that host: we ask it once per host not seen lately, and look up all new hosts in one vectorised
        call. Answers are remembered across batches (a WARC file revisits its hosts), up to HOST_CACHE_SIZE.
        """
        cache = self.host_cache
        if len(cache) + len(urls) > HOST_CACHE_SIZE:
            cache.clear()
        extractor = tld_extractor()
        blocked: dict[str, tuple[bool, bool]] = {}
        names: dict[str, tuple[str, str]] = {}
        for url, key in zip(urls, keys, strict=True):
            if not url or key in blocked or key in names:
                continue
            known = cache.get(key)
            if known is not None:
                blocked[key] = known
            else:
                info = extractor(url)
                names[key] = (_registered_domain(info), info.fqdn)
        if names:
            hosts = list(names)
            registered = [names[h][0] for h in hosts]
            fqdns = [names[h][1] for h in hosts]
            reg_hit = self.lists.domains_contain(np.fromiter(map(hash_domain, registered), np.uint64, len(hosts)))
            fqdn_hit = self.lists.domains_contain(np.fromiter(map(hash_domain, fqdns), np.uint64, len(hosts)))
            extra = self.extra_domains
            for i, h in enumerate(hosts):
                answer = (bool(reg_hit[i]) or registered[i] in extra, bool(fqdn_hit[i]) or fqdns[i] in extra)
                blocked[h] = cache[h] = answer
        return blocked

    def _url_reason(self, url: str) -> str | None:
        if url in self.urls:
            return "url"
        # Case-sensitive split, as datatrove does: the lists are lowercase, so "PORN" is no banned word.
        words = set(_NORMALIZER.split(url))
        if not self.banned_words.isdisjoint(words):
            return "hard_blacklisted"
        if len(self.soft_banned_words & words) >= self.soft_word_threshold:
            return "soft_blacklisted"
        if self.subwords is not None and next(self.subwords.iter(normalize(url)), None) is not None:
            return "blacklisted_subword"
        return None


def compile_rules(config: UrlFilterConfig) -> UrlRules:
    """The rules for ``config``, built once per process per distinct configuration."""
    return _compile(
        config.soft_word_threshold,
        tuple(config.extra_domains),
        tuple(config.extra_urls),
        tuple(config.extra_banned_words),
    )


@lru_cache(maxsize=8)
def _compile(
    soft_word_threshold: int,
    extra_domains: tuple[str, ...],
    extra_urls: tuple[str, ...],
    extra_banned_words: tuple[str, ...],
) -> UrlRules:
    import ahocorasick

    lists = load_block_lists()
    subwords = None
    if lists.banned_subwords:
        subwords = ahocorasick.Automaton(ahocorasick.STORE_INTS)
        for word in sorted(lists.banned_subwords):
            subwords.add_word(word, len(subwords))
        subwords.make_automaton()
    return UrlRules(
        lists=lists,
        extra_domains=frozenset(parse_list(extra_domains, do_normalize=False)),
        urls=lists.urls | parse_list(extra_urls, do_normalize=False),
        banned_words=lists.banned_words | parse_list(extra_banned_words),
        soft_banned_words=lists.soft_banned_words,
        soft_word_threshold=soft_word_threshold,
        subwords=subwords,
    )


@dataclass
class UrlFilterStage:
    """Drops documents whose URL FineWeb's URL filter blocks; the rule name is the drop reason.

    Needs a ``url`` column (raw records or documents). Disabled, it keeps every row.
    """

    config: UrlFilterConfig = field(default_factory=UrlFilterConfig)
    name: str = field(default="url_filter", init=False)

    def __call__(self, table: pa.Table) -> pa.Table:
        if "url" not in table.column_names:
            raise ValueError(f"stage {self.name!r} needs a 'url' column; got columns {table.column_names}")
        if not self.config.enabled:
            return with_drop_reasons(table, pa.nulls(table.num_rows, pa.string()))
        reasons = compile_rules(self.config).reasons(table.column("url").to_pylist())
        return with_drop_reasons(table, reasons)
