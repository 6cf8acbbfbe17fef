"""cc-refinery core: document schema, shard I/O, the stage contract, sources, stages, engines and CLI."""

__version__ = "0.1.0"
