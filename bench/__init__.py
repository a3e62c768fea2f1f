"""Benchmarks of the clustering core: quality, usefulness and speed.

Run them all with ``make bench`` (``python -m bench``); ``python -m bench --help``
lists the options. Every benchmark prints its numbers in rich tables, each with a
target and PASS/MISS against it, and ratios against baselines measured in the same
run. Nothing here asserts: numbers are reported, never tested.

Modules: :mod:`bench.quality` (NMI/ARI, drift recovery and churn on simulated users
over real news text), :mod:`bench.movielens` (recall@10 of a cluster-popularity
recommender on MovieLens 100K), :mod:`bench.speed` (updates/s and events/s),
:mod:`bench.common` (datasets, embedding cache, timing, tables).
"""
