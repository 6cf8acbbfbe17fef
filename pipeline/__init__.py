"""cc-refinery: Common Crawl -> clean Parquet documents, token shards and a dataset report.

Layers, each importing only those below it (checked by import-linter, ``make lint``):
``core`` <- ``sources``, ``stages``, ``dedup``, ``report``, ``engines``, ``demo`` (and the top-level
``filters``, ``tokenization``, ``validation``) <- ``app`` (config, passes, run, CLI) <- ``flows``.
"""

__version__ = "0.1.0"
