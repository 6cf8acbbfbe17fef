"""The embedded sample: a small Common Crawl dump built from real pages shipped in ``sample_data/``, and a
local HTTP mirror that serves it (with Range), so ``make demo`` and the tests run the real download code
offline. Not used by production runs."""

SAMPLE_DUMP = "CC-MAIN-2024-22"
"""The crawl the sample's pages are named after (its WARC records carry this dump)."""
