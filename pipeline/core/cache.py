"""Where cc-refinery keeps files it builds or fetches once per machine (block lists, tokenizer ranks)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$CC_REFINERY_CACHE_DIR``, else ``$XDG_CACHE_HOME/cc-refinery``, else ``~/.cache/cc-refinery``."""
    explicit = os.environ.get("CC_REFINERY_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "cc-refinery"
