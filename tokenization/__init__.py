"""BPE tokenization into llm.c-compatible binary shards.

The folder is ``tokenization/`` rather than ``tokenize/``: a top-level package named ``tokenize``
would shadow the standard library module of that name, which Python itself imports at startup.

Modules: ``shards`` (the shard format, reader and checks; numpy only, so a training node can import it
without the pipeline), ``encoders`` (tiktoken encodings loadable offline, ``TokenizerConfig``),
``tokenize_pass`` (``run_tokenize``: Parquet parts -> shards, parallel and resumable), ``manifest``
(assembling shards and ``manifest.json``), ``cli`` (``refinery shards ...``, ``refinery tokenizer fetch``).
Nothing is imported here, so importing ``tokenization.shards`` stays light.
"""
