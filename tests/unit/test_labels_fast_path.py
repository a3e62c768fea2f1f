"""The fast paths of stream.labels give exactly what the plain algorithm gives.

``tokenize`` has a fast path for texts without Chinese/Japanese characters, and
``ClusterLabeler.summarise`` tokenises each distinct (cluster, text) once per batch and
caches tokenisations by key across batches. The reference implementations below are the
straightforward versions (every text tokenised word by word); the statistics must be equal,
including the order in which terms enter (it decides vocabulary columns and tie-breaks).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from stream.labels import _CJK, _WORD, ENGLISH_STOP_WORDS, ClusterLabeler, tokenize


def reference_tokenize(text, stop_words=ENGLISH_STOP_WORDS):
    def plain(word):
        if len(word) < 2 or word in stop_words or not any(ch.isalpha() for ch in word):
            return []
        return [word]

    out = []
    for word in _WORD.findall(text.lower()):
        if _CJK.search(word):
            pos = 0
            for run in _CJK.finditer(word):
                out.extend(plain(word[pos : run.start()]))
                chars = run.group()
                out.extend([chars] if len(chars) == 1 else [chars[i : i + 2] for i in range(len(chars) - 1)])
                pos = run.end()
            out.extend(plain(word[pos:]))
        else:
            out.extend(plain(word))
    return out


def reference_summarise(n_clusters, cluster_ids, texts, stop_words=ENGLISH_STOP_WORDS):
    per_cluster = {}
    for cluster, text in zip(cluster_ids, texts, strict=True):
        c = int(cluster)
        if not (0 <= c < n_clusters) or not text:
            continue
        per_cluster.setdefault(c, Counter()).update(reference_tokenize(text, stop_words))
    return {c: [(t, float(v)) for t, v in cnt.items()] for c, cnt in per_cluster.items() if cnt}


# Words covering every rule: stop words, numbers (ASCII, superscript, Roman, CJK numerals),
# one-character tokens, underscores, mixed scripts, CJK runs and the katakana middle dot.
WORDS = [
    "the",
    "and",
    "football",
    "Football",
    "MATCH",
    "42",
    "2024",
    "x",
    "a",
    "day_long",
    "covid19",
    "h2o",
    "²³",
    "Ⅻ",
    "五五",
    "五",
    "東京タワー",
    "python東京",
    "・",
    "ＡＢＣ",
    "Москва",
    "ποδόσφαιρο",
    "naïve",
    "İstanbul",
    "ǅemal",
    "3d",
    "_",
    "--",
    "café",
    "日本",
    "ß",
    "ﬁne",
    "١٢٣",
    "abc١",
]


def _random_texts(rng, n):
    texts = []
    for _ in range(n):
        k = int(rng.integers(0, 9))
        words = [WORDS[int(i)] for i in rng.integers(0, len(WORDS), size=k)]
        seps = [" ", ", ", "! ", "\t", "-", "\u3000"]
        texts.append("".join(w + seps[int(rng.integers(0, len(seps)))] for w in words))
    return texts


def test_tokenize_fast_path_equals_reference():
    rng = np.random.default_rng(0)
    for text in [*WORDS, *_random_texts(rng, 3000)]:
        assert tokenize(text) == reference_tokenize(text), text
        assert tokenize(text, stop_words=set()) == reference_tokenize(text, set()), text


@pytest.mark.parametrize("with_keys", [False, True])
def test_summarise_equals_reference_over_batches(with_keys):
    rng = np.random.default_rng(1)
    pool = _random_texts(rng, 60) + ["", "the and of"]  # repeats, empty and stop-word-only texts
    labeler = ClusterLabeler(n_clusters=4, token_cache_size=25)  # small: eviction happens
    reference = ClusterLabeler(n_clusters=4)
    for _ in range(12):
        picks = rng.integers(0, len(pool), size=80)
        texts = [pool[int(i)] for i in picks]
        keys = [f"text:{int(i)}" for i in picks] if with_keys else None
        ids = rng.integers(-1, 5, size=80)  # -1 and 4 are outside 0..k-1: skipped
        stats = labeler.summarise(ids, texts, keys)
        expected = reference_summarise(4, ids, texts)
        assert {c: list(t.items()) for c, t in stats.counts.items()} == expected
        assert list(stats.counts) == list(expected)  # cluster order too
        labeler.apply(stats)
        reference.apply(reference.summarise(ids, texts))
    assert labeler.to_bytes() == reference.to_bytes()
    assert len(labeler._token_cache) + len(labeler._text_token_cache) <= 25


def test_summarise_keys_must_match_texts_in_length():
    with pytest.raises(ValueError):
        ClusterLabeler(2).summarise([0, 1], ["a b", "c d"], keys=["k1"])


def test_token_cache_can_be_disabled():
    labeler = ClusterLabeler(2, token_cache_size=0)
    stats = labeler.summarise([0, 0], ["apple orchard", "apple"], keys=["k", "j"])
    assert stats.counts == {0: {"apple": 2.0, "orchard": 1.0}}
    assert not labeler._token_cache and not labeler._text_token_cache
