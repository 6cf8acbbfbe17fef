"""The project's code for Spark executors: a content-named zip of its packages, shipped once per session."""

from __future__ import annotations

import hashlib
import io
import logging
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.core.storage import write_bytes_atomic

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

CODE_PACKAGES = ("pipeline", "filters", "tokenization", "validation")
"""The project's packages executors import (the flows run on the driver only)."""
ARCHIVE_PREFIX = "cc_refinery-code"
_SKIP_DIRS = {"__pycache__"}


def _project_root() -> Path:
    import pipeline

    return Path(pipeline.__file__).resolve().parent.parent


def build_code_archive(out_dir: Path) -> Path:
    """Zip the project's packages (sources and package data) for executors; named by content, reused if present.

    The zip is what ``spark-submit --py-files`` or ``SparkContext.addPyFile`` takes; third-party
    dependencies come from the executors' Python environment (``pip install cc-refinery[spark]`` there, or
    a packed virtualenv passed with ``--archives``, see infra/README.md).
    """
    root = _project_root()
    files: list[tuple[str, Path]] = []
    for package in CODE_PACKAGES:
        for path in sorted((root / package).rglob("*")):
            if path.is_file() and not _SKIP_DIRS.intersection(path.parts) and path.suffix != ".pyc":
                files.append((path.relative_to(root).as_posix(), path))
    digest = hashlib.sha256()
    for name, path in files:
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    out_dir = Path(out_dir)
    target = out_dir / f"{ARCHIVE_PREFIX}-{digest.hexdigest()[:12]}.zip"
    if target.exists():
        return target
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, path in files:
            archive.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), path.read_bytes())
    write_bytes_atomic(target, buffer.getvalue())
    return target


def _shipped(spark: SparkSession) -> bool:
    """Whether the project's zip already reaches executors (``spark-submit --py-files``, or an earlier call)."""
    conf = spark.sparkContext.getConf()
    py_files = conf.get("spark.submit.pyFiles", "") or ""
    return ARCHIVE_PREFIX in py_files or getattr(spark.sparkContext, "_cc_refinery_shipped", False)


def ship_code(spark: SparkSession, cache_dir: Path | None = None) -> Path | None:
    """Make the project's code importable on every executor, unless it already is; returns the zip shipped.

    The zip is built in ``cache_dir`` (default: the project's cache folder).
    """
    if _shipped(spark):
        return None
    from pipeline.core.cache import cache_root

    archive = build_code_archive(cache_dir or cache_root() / "spark")
    spark.sparkContext.addPyFile(str(archive))
    spark.sparkContext._cc_refinery_shipped = True  # type: ignore[attr-defined]
    log.info("shipped %s to the executors", archive.name)
    return archive
