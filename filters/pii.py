"""PII anonymisation, FineWeb's last step: email and public IP addresses replaced as datatrove's ``PIIFormatter``.

Same patterns, same replacements, same order (emails, then IPs in the text the email step left), and the same
IP check: a dotted quad is replaced only when Python's ``ipaddress`` reads it and, with ``only_public_ips``,
calls it global (so private, loopback, link-local, reserved, documentation ranges and quads with leading zeros
stay). IPv6 addresses are not matched, as in datatrove.

One difference, on purpose: datatrove hands out its replacements in turn across every document one formatter
instance sees, so a document's text depends on what the same worker processed before it. Here the turn starts
again with every document, which keeps the stage pure and its output the same on any engine and batch size; it
is what datatrove writes for a document it formats first.

Most documents hold no ``@`` and no dotted quad: Arrow finds those (a substring search, an RE2 match) and
Python's ``re`` with the exact patterns runs only on the rest.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from filters.config import PiiConfig

EMAIL_PATTERN = (
    r"\b[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@(?:(?:[A-Za-z0-9](?:["
    r"A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?|\[(?:(?:25[0-5]|2[0-4][0-9]|["
    r"01]?[0-9][0-9]?)\.){3}(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?|[A-Za-z0-9-]*[A-Za-z0-9]:)])"
)
"""datatrove's email pattern (an RFC 5322-style local part, a domain or a bracketed address literal)."""

IPV4_PATTERN = r"(?:(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)\.){3}(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)"
"""datatrove's IP pattern: a dotted quad of 0-255, found anywhere (also inside longer digit runs)."""


@lru_cache(maxsize=65536)
def is_public_ip(text: str) -> bool:
    """Whether ``text`` is an IP address Python calls global; a quad it refuses (leading zeros) is not."""
    try:
        return ipaddress.ip_address(text).is_global
    except ValueError:
        return False


@lru_cache(maxsize=65536)
def is_ip(text: str) -> bool:
    """Whether Python reads ``text`` as an IP address at all (the check with ``only_public_ips`` off)."""
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


WHITESPACE = re.compile(r"\s")


def email_windows(text: str) -> Iterator[tuple[int, int]]:
    """Spans of ``text`` that hold every email match, each cut at whitespace around an ``@``.

    An email match holds one ``@`` and no whitespace, and its pattern looks at no character before its start
    other than through ``\\b`` (whitespace and the start of a string both count as a non-word character there),
    nor after its end: so the matches of a span cut at whitespace are the matches of the whole text inside it,
    and matching only around each ``@`` finds exactly what matching everywhere finds, without scanning the rest.
    """
    pos = 0
    while (at := text.find("@", pos)) >= 0:
        start = max(text.rfind(" ", pos, at), text.rfind("\n", pos, at), pos - 1) + 1
        end = WHITESPACE.search(text, at)
        stop = end.start() if end else len(text)
        yield start, stop
        pos = stop


@dataclass(frozen=True)
class Replacer:
    """One kind of PII: a pattern, replacements used in turn, and an optional check a match must pass."""

    pattern: re.Pattern[str]
    replacements: tuple[str, ...]
    valid: Callable[[str], bool] | None = None
    windows: Callable[[str], Iterator[tuple[int, int]]] | None = None
    """Where matches can be (spans of the text); None: anywhere."""

    def replace(self, text: str) -> tuple[str, int]:
        """``text`` with every valid match replaced (replacements in turn), and how many were."""
        replacements, valid = self.replacements, self.valid
        n = 0

        def substitute(match: re.Match[str]) -> str:
            nonlocal n
            found = match.group(0)
            if valid is not None and not valid(found):
                return found
            n += 1
            return replacements[(n - 1) % len(replacements)]

        if self.windows is None:
            return self.pattern.sub(substitute, text), n
        pieces, done = [], 0
        for start, stop in self.windows(text):
            pieces += (text[done:start], self.pattern.sub(substitute, text[start:stop]))
            done = stop
        return ("".join(pieces) + text[done:] if n else text), n


@dataclass
class PiiStage:
    """Replaces email and public IP addresses in ``text``; counts replacements per kind (``pii:email``, ``pii:ip``)."""

    config: PiiConfig = field(default_factory=PiiConfig)
    name: str = "pii"
    count_columns: ClassVar[dict[str, str]] = {"_pii_email": "email", "_pii_ip": "ip"}

    def __post_init__(self) -> None:
        cfg = self.config
        self.replacers: list[tuple[str, Replacer]] = []
        if "email" in cfg.kinds:
            self.replacers.append(
                ("email", Replacer(re.compile(EMAIL_PATTERN), cfg.email_replacements, windows=email_windows))
            )
        if "ip" in cfg.kinds:
            valid = is_public_ip if cfg.only_public_ips else is_ip
            self.replacers.append(("ip", Replacer(re.compile(IPV4_PATTERN), cfg.ip_replacements, valid)))

    def __call__(self, table: pa.Table) -> pa.Table:
        if "text" not in table.column_names:
            return table
        text = table.column("text").combine_chunks()
        for kind, replacer in self.replacers:
            text, counts = replace_column(text, kind, replacer)
            table = table.append_column(f"_pii_{kind}", pa.array(counts, pa.int64()))
        return table.set_column(table.column_names.index("text"), "text", text)


def candidates(text: pa.Array, kind: str) -> np.ndarray:
    """Row numbers whose text can hold a match: an ``@`` for emails, a dotted quad (RE2, same pattern) for IPs."""
    mask = pc.match_substring(text, "@") if kind == "email" else pc.match_substring_regex(text, IPV4_PATTERN)
    return np.flatnonzero(mask.fill_null(False).to_numpy(zero_copy_only=False))


def replace_column(text: pa.Array, kind: str, replacer: Replacer) -> tuple[pa.Array, np.ndarray]:
    """``text`` with ``replacer`` applied to every row that can hold a match, and the replacements per row."""
    counts = np.zeros(len(text), np.int64)
    rows = candidates(text, kind)
    if not len(rows):
        return text, counts
    new: list[str] = []
    changed: list[int] = []
    for row, value in zip(rows.tolist(), text.take(pa.array(rows)).to_pylist(), strict=True):
        replaced, n = replacer.replace(value)
        if n:
            counts[row] = n
            new.append(replaced)
            changed.append(row)
    if not changed:
        return text, counts
    mask = np.zeros(len(text), bool)
    mask[changed] = True
    return pc.replace_with_mask(text, pa.array(mask), pa.array(new, text.type)), counts
