"""Run outputs (the dataset report, stats) over HTTP on 127.0.0.1, next to the Prefect server.

The Prefect UI drops ``file://`` links and browsers block them from http pages, so ``make ui`` serves
the runs' root folder read-only (GET and HEAD of files; no listing, no paths outside the folder) and
tells the flow-run processes where through two environment variables. Without them (ephemeral Prefect,
tests) the flow names the report by its path instead. A run on an object store (``s3://...``) is not under
the served folder: its report is named by its store URL.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from pipeline.core.storage import Location, is_remote
from pipeline.demo.mirror import serve_directory

OUTPUTS_URL_ENV = "REFINERY_OUTPUTS_URL"
OUTPUTS_ROOT_ENV = "REFINERY_OUTPUTS_ROOT"
DEFAULT_OUTPUTS_PORT = 4201
"""Next to Prefect's 4200; fixed, so report links in older runs keep working after a restart."""


@dataclass(frozen=True)
class OutputsSite:
    """A served folder: ``root`` on disk is ``url`` over HTTP."""

    root: Path
    url: str

    def url_for(self, path: Location) -> str | None:
        """The http URL of ``path``, or None when it lies outside the served folder (or on an object store)."""
        if is_remote(path):
            return None
        target = Path(path).resolve()
        if not target.is_relative_to(self.root):
            return None
        return self.url.rstrip("/") + "/" + quote(target.relative_to(self.root).as_posix())

    def env(self) -> dict[str, str]:
        """The variables that tell flow-run processes about this site."""
        return {OUTPUTS_URL_ENV: self.url, OUTPUTS_ROOT_ENV: str(self.root)}


def site_from_env(env: Mapping[str, str] | None = None) -> OutputsSite | None:
    """The outputs site ``make ui`` announced to this process, if any."""
    env = os.environ if env is None else env
    url, root = env.get(OUTPUTS_URL_ENV), env.get(OUTPUTS_ROOT_ENV)
    if not url or not root:
        return None
    return OutputsSite(Path(root).resolve(), url)


@contextlib.contextmanager
def serve_outputs(root: Path, host: str = "127.0.0.1", port: int = DEFAULT_OUTPUTS_PORT) -> Iterator[OutputsSite]:
    """Serve ``root`` (created if missing) read-only in a background thread until the block ends."""
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    with serve_directory(root, host=host, port=port) as url:
        yield OutputsSite(root, url)
