"""The bottom layer every other one builds on: the document schema, the stage contract, stats and document
profiles, Parquet parts with markers and atomic writes, the output lock, caches and worker processes.

Imports nothing else of the project.
"""
