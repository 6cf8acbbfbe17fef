"""BPE tokenization into llm.c-compatible binary shards.

The folder is ``tokenization/`` rather than ``tokenize/``: a top-level package named ``tokenize``
would shadow the standard library module of that name, which Python itself imports at startup.
"""
