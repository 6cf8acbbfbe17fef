"""Document filters, each a stage: the URL filter (before extraction) and the quality filters (Gopher, C4, FineWeb)."""
