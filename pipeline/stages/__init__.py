"""The WARC pass's own stages: main-text extraction (trafilatura) and language identification (fastText)."""
