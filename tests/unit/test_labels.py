"""ClusterLabeler: tokeniser, c-TF-IDF top terms, bounded vocabulary, decay, merge and bytes."""

from __future__ import annotations

import numpy as np
import pytest

from stream.labels import ClusterLabeler, LabelStatistics, tokenize

TOPICS = {
    0: ["football", "goal", "league", "striker", "match"],
    1: ["python", "compiler", "release", "library", "bug"],
    2: ["recipe", "oven", "flour", "butter", "bake"],
}
SHARED = ["today", "great", "news", "people", "world"]  # in every cluster: low idf


def _texts(rng, n_per_cluster):
    ids, texts = [], []
    for c, words in TOPICS.items():
        for _ in range(n_per_cluster):
            picked = list(rng.choice(words, 3)) + list(rng.choice(SHARED, 3)) + ["the", "and", "2024", "x"]
            rng.shuffle(picked)
            ids.append(c)
            texts.append(" ".join(picked))
    return ids, texts


def test_tokenizer_rules():
    assert tokenize("The QUICK brown fox, 42 times a day_long x") == [
        "quick",
        "brown",
        "fox",
        "times",
        "day",
        "long",
    ]
    assert tokenize("Ελληνικά νέα για το ποδόσφαιρο") == ["ελληνικά", "νέα", "για", "το", "ποδόσφαιρο"]
    assert tokenize("Москва 2024: новости") == ["москва", "новости"]
    assert tokenize("covid19 h2o 3d") == ["covid19", "h2o", "3d"]  # mixed tokens stay, pure numbers go
    assert tokenize("東京タワー") == ["東京", "京タ", "タワ", "ワー"]  # CJK: character bigrams
    assert tokenize("python東京") == ["python", "東京"]
    assert tokenize("the and of", stop_words=set()) == ["the", "and", "of"]


def test_top_terms_are_the_topic_words():
    rng = np.random.default_rng(0)
    labeler = ClusterLabeler(n_clusters=4, top_n=5)
    for _ in range(5):
        labeler.apply(labeler.summarise(*_texts(rng, 20)))
    terms = labeler.all_terms()
    for c, words in TOPICS.items():
        assert sorted(terms[c]) == sorted(words), (c, terms[c])
    assert terms[3] == []  # a cluster with no texts has no label
    assert labeler.terms(99) == []


def test_vocabulary_is_bounded():
    rng = np.random.default_rng(1)
    labeler = ClusterLabeler(n_clusters=2, max_vocab=50, top_n=3)
    for batch in range(20):
        noise = [" ".join(f"w{batch}n{i}z" for i in rng.integers(0, 10_000, 30)) for _ in range(10)]
        texts = ["alpha beta gamma " + t for t in noise[:5]] + ["delta epsilon zeta " + t for t in noise[5:]]
        labeler.apply(labeler.summarise([0] * 5 + [1] * 5, texts))
        assert labeler.vocab_size <= 50
    assert sorted(labeler.terms(0)) == ["alpha", "beta", "gamma"]
    assert sorted(labeler.terms(1)) == ["delta", "epsilon", "zeta"]


def test_decay_forgets_old_terms():
    labeler = ClusterLabeler(n_clusters=2, half_life=2.0, top_n=2)
    labeler.apply(labeler.summarise([0, 0, 1], ["apple apple orchard", "apple orchard", "engine"]))
    assert labeler.terms(0) == ["apple", "orchard"]
    for _ in range(6):
        labeler.apply(labeler.summarise([0, 1], ["banana plantation", "engine"]))
    assert labeler.terms(0)[0] in {"banana", "plantation"}
    assert labeler.count(0, "apple") == pytest.approx(3 * 0.5**3, rel=1e-9)  # six batches = three half-lives
    for _ in range(20):
        labeler.apply(LabelStatistics(2))
    assert labeler.terms(0) == [] and labeler.terms(1) == []
    assert labeler.vocab_size == 0  # decayed-away terms leave the vocabulary


def test_statistics_merge_and_bytes():
    rng = np.random.default_rng(2)
    ids, texts = _texts(rng, 6)
    whole = ClusterLabeler(n_clusters=3)
    parts = ClusterLabeler(n_clusters=3)
    half = len(texts) // 2
    a, b = parts.summarise(ids[:half], texts[:half]), parts.summarise(ids[half:], texts[half:])
    merged = LabelStatistics.merge([a, b])
    assert merged == whole.summarise(ids, texts)
    assert LabelStatistics.from_bytes(merged.to_bytes()) == merged
    whole.apply(whole.summarise(ids, texts))
    parts.apply(LabelStatistics.from_bytes((b + a).to_bytes()))
    assert whole.all_terms() == parts.all_terms()
    with pytest.raises(ValueError):
        a + LabelStatistics(5)


def test_state_round_trip_and_reset():
    rng = np.random.default_rng(3)
    labeler = ClusterLabeler(n_clusters=3, top_n=4, stop_words=["great"], min_count=0.5)
    for _ in range(3):
        labeler.apply(labeler.summarise(*_texts(rng, 5)))
    copy = ClusterLabeler.from_bytes(labeler.to_bytes())
    assert copy.all_terms() == labeler.all_terms()
    assert copy.stop_words == frozenset({"great"}) and copy.min_count == 0.5
    assert copy.count(1, "python") == labeler.count(1, "python") > 0
    batch = labeler.summarise(*_texts(rng, 5))
    copy.apply(batch)
    labeler.apply(batch)
    assert copy.to_bytes() == labeler.to_bytes()
    labeler.reset([1])
    assert labeler.terms(1) == [] and labeler.terms(0) != []
    with pytest.raises(ValueError):
        ClusterLabeler.from_bytes(b"nope")
