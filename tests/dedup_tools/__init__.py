"""Test and benchmark tools for dedup, kept out of the library: planted near-duplicate
embeddings (:mod:`dedup_tools.synthetic`) and recall/precision against brute force
(:mod:`dedup_tools.evaluate`).

Importable as ``dedup_tools`` from the tests (``pythonpath = ["tests"]``) and from
``benchmarks/dedup_bench.py`` (which puts ``tests/`` on ``sys.path``).
"""
