"""Step 1 of dedup, per input part: content hashes, MinHash signatures and band hashes of every document.

Also the layout of the pass's work folder, which the clustering steps (local and Spark) read and write.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.parts import marker_path
from pipeline.core.storage import Location, is_remote, local_copy, location, publish, temp_path_for
from pipeline.dedup.clustering import write_json_atomic
from pipeline.dedup.config import DedupConfig
from pipeline.dedup.exact import content_hashes_from_normalized
from pipeline.dedup.minhash import band_hashes, normalize_texts, shingle_hashes, signatures_from_shingles
from pipeline.engines.base import WorkUnit, write_progress

log = logging.getLogger(__name__)

WORK = "_work"
SIGNATURES = "signatures"
CLUSTERS = "clusters"
ASSIGN = "assign"
LINKS = "links.parquet"
CLUSTER_REPORT = "dedup_clusters.json"
KEEP, EXACT_DUP, NEAR_DUP = 0, 1, 2
"""What the cluster step decides for each document (the ``stage`` column of the assignment files)."""


def band_column(band: int) -> str:
    return f"band_{band:03d}"


SIGN_COLUMNS = ["id", "url", "dump", "text"]


def signature_schema(config: DedupConfig) -> pa.Schema:
    fields = [
        pa.field("row", pa.int32()),
        pa.field("id", pa.string()),
        pa.field("url", pa.string()),
        pa.field("dump", pa.string()),
        pa.field("hash_hi", pa.uint64()),
        pa.field("hash_lo", pa.uint64()),
        pa.field("empty", pa.bool_()),
        pa.field("shingles", pa.int32()),
    ]
    if config.minhash.enabled:
        fields += [pa.field(band_column(b), pa.uint64()) for b in range(config.minhash.bands)]
    return pa.schema(fields)


def sign_batch(table: pa.Table, first_row: int, config: DedupConfig) -> tuple[pa.Table, np.ndarray | None]:
    """Hashes and band hashes of one batch (the spilled columns) and its 32-bit signatures."""
    normalized = normalize_texts(table.column("text"))
    hashes = content_hashes_from_normalized(normalized)
    n = table.num_rows
    columns = {
        "row": pa.array(np.arange(first_row, first_row + n, dtype=np.int32)),
        "id": table.column("id"),
        "url": table.column("url"),
        "dump": table.column("dump"),
        "hash_hi": pa.array(hashes[:, 0]),
        "hash_lo": pa.array(hashes[:, 1]),
        "empty": pa.array(np.fromiter(map(len, normalized), dtype=np.int64, count=n) == 0),
    }
    sig32 = None
    mh = config.minhash
    if mh.enabled:
        shingles, offsets = shingle_hashes(normalized, mh.ngram_size, mh.seed)
        signatures = signatures_from_shingles(shingles, offsets, mh)
        counts = np.diff(offsets)
        columns["shingles"] = pa.array(np.minimum(counts, np.iinfo(np.int32).max).astype(np.int32))
        bands = band_hashes(signatures, mh.bands, mh.rows)
        for b in range(mh.bands):
            columns[band_column(b)] = pa.array(bands[:, b])
        sig32 = (signatures & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    else:
        columns["shingles"] = pa.array(np.zeros(n, dtype=np.int32))
    return pa.table(columns, schema=signature_schema(config)), sig32


@dataclass
class SignPart:
    """Step 1 for one input part: writes its signature Parquet + ``.sig.npy``, then the marker (picklable)."""

    config: DedupConfig
    writes_parts: ClassVar[bool] = False
    """Its files are not :class:`pipeline.core.parts.PartWriter` parts (an engine need not list them first)."""

    def __call__(self, unit: WorkUnit, out_dir: Location | str) -> None:
        (path,) = unit.inputs
        with local_copy(location(path)) as local:  # on a store one streamed GET, not ranged reads
            self._sign(unit, pq.ParquetFile(local), location(out_dir))

    def _sign(self, unit: WorkUnit, source: pq.ParquetFile, out_dir: Location) -> None:
        (path,) = unit.inputs
        rows = source.metadata.num_rows
        num_perm = self.config.minhash.num_perm if self.config.minhash.enabled else 0
        table_path = out_dir / f"{unit.part}.parquet"
        sig_path = out_dir / f"{unit.part}.sig.npy"
        if not is_remote(out_dir) and out_dir.is_dir():
            # a killed attempt's (one run per output: see lock); only this part's own names: another part may be
            # named after this one plus a suffix (chunks: part-00001.00000) and be writing right now
            for target in (table_path, sig_path):
                for stale in out_dir.glob(f".{target.name}.*.tmp"):
                    stale.unlink(missing_ok=True)
        # local temporary files (beside the targets on disk, in scratch for a store), published when complete
        tmp_table = temp_path_for(table_path)
        tmp_sig = temp_path_for(sig_path)
        done = 0
        try:
            # the .npy is written with plain writes, not a memory map: on a full disk a write raises ENOSPC,
            # where a store into a memory map kills the process with SIGBUS
            with (
                open(tmp_sig, "wb") as sig_file,
                pq.ParquetWriter(tmp_table, signature_schema(self.config), compression="zstd") as writer,
            ):
                header = {"descr": np.dtype(np.uint32).str, "fortran_order": False, "shape": (rows, num_perm)}
                np.lib.format.write_array_header_1_0(sig_file, header)
                for batch in source.iter_batches(batch_size=self.config.batch_size, columns=SIGN_COLUMNS):
                    table, sig32 = sign_batch(pa.Table.from_batches([batch]), done, self.config)
                    writer.write_table(table, row_group_size=100_000)
                    if sig32 is not None:
                        sig_file.write(np.ascontiguousarray(sig32, dtype=np.uint32).tobytes())
                    done += table.num_rows
                    write_progress(out_dir, unit.part, done)
                if done != rows:
                    raise ValueError(f"{path}: read {done} rows, its metadata says {rows}")
                sig_file.flush()
                os.fsync(sig_file.fileno())
            publish(tmp_sig, sig_path)
            publish(tmp_table, table_path)
        finally:
            tmp_sig.unlink(missing_ok=True)
            tmp_table.unlink(missing_ok=True)
        write_json_atomic(marker_path(out_dir, unit.part), {"rows": rows})
