"""Document filters: URL filter now, quality filters (Gopher, C4, FineWeb) next. Each is a stage."""
