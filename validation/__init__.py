"""The GPU hand-off: a small GPT trained on the token shards to prove they train (``refinery validate-shards``).

Imports only ``tokenization.shards``, numpy and torch (the ``[train]`` extra), so it runs on a training node
without the pipeline's dependencies. ``validate`` is the job and its CLI, ``checks`` the shard checks,
``data`` batches and val windows, ``model`` the GPT, ``hardware`` device, precision, compile and MFU.
"""
