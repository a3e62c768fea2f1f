"""Deterministic stand-ins for the sentence encoder, for tests that need vectors but not meaning.

>>> enc = HashEncoder(dim=8)
>>> a, b = enc.encode(["ball game", "ball game"])
>>> bool((a == b).all()), round(float((a * a).sum()), 6), enc.texts
(True, 1.0, 2)
"""

from __future__ import annotations

import hashlib

import numpy as np


class HashEncoder:
    """One pseudo-random unit vector per text (seeded by a hash of the text); counts texts encoded."""

    def __init__(self, dim: int = 16) -> None:
        self.dim = dim
        self.texts = 0

    def encode(self, texts):
        self.texts += len(texts)
        rows = []
        for t in texts:
            seed = int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little")
            v = np.random.default_rng(seed).normal(size=self.dim)
            rows.append(v / np.linalg.norm(v))
        return np.asarray(rows, dtype=np.float32)
