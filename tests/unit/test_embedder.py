"""Embedding cache, item catalog, event embedder (fake encoder) and the sentence embedder (real models)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from stream.catalog import ItemCatalog
from stream.embedder import EmbeddingCache, EventEmbedder, SentenceEmbedder, default_model_path, text_key
from stream.events import BehaviourEvent


class CountingEncoder:
    """Deterministic fake encoder: a unit vector per text (from its hash); records every call."""

    def __init__(self, dim: int = 8) -> None:
        self.dim = dim
        self.calls: list[list[str]] = []

    def encode(self, texts):
        self.calls.append(list(texts))
        rows = []
        for t in texts:
            seed = int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little")
            v = np.random.default_rng(seed).normal(size=self.dim)
            rows.append(v / np.linalg.norm(v))
        return np.asarray(rows, dtype=np.float32).reshape(len(texts), self.dim)

    @property
    def n_texts(self) -> int:
        return sum(len(c) for c in self.calls)


def ev(user="u1", text=None, item_id=None, ts=0):
    return BehaviourEvent(user_id=user, ts_ms=ts, type="view", text=text, item_id=item_id)


# ------------------------------------------------------------------------------------- cache
def test_cache_lru_eviction_order_and_counters():
    cache = EmbeddingCache(3)
    for k in "abc":
        cache.put(k, np.full(2, ord(k), np.float32))
    assert cache.get("a") is not None  # a becomes most recent; b is now the oldest
    cache.put("d", np.zeros(2, np.float32))
    assert "b" not in cache and {"a", "c", "d"} <= {k for k in "abcd" if k in cache}
    assert len(cache) == 3 and cache.evictions == 1
    assert cache.get("b") is None
    assert (cache.hits, cache.misses) == (1, 1)
    assert cache.hit_ratio == pytest.approx(0.5)
    np.testing.assert_array_equal(cache.get("a"), np.full(2, ord("a"), np.float32))


def test_cache_capacity_zero_stores_nothing():
    cache = EmbeddingCache(0)
    cache.put("a", np.zeros(2, np.float32))
    assert len(cache) == 0 and cache.get("a") is None and cache.misses == 1
    with pytest.raises(ValueError):
        EmbeddingCache(-1)


# ------------------------------------------------------------------------------------- catalog
def test_catalog_versions_bump_only_on_text_change(tmp_path):
    cat = ItemCatalog()
    assert cat.upsert("i", "a") == 1
    assert cat.upsert("i", "a", metadata={"x": 1}) == 1
    assert cat.get("i").metadata == {"x": 1}
    assert cat.upsert("i", "b") == 2
    assert cat.get("i").metadata == {"x": 1}  # metadata kept when not given
    assert cat.remove("i") and not cat.remove("i") and cat.get("i") is None
    assert cat.upsert("i", "b") == 3  # versions are never reused for an id
    path = tmp_path / "items.jsonl"
    path.write_text(
        '{"item_id": "x1", "text": "Lakers win"}\n'
        "not json\n"
        '{"item_id": 7, "title": "Title only", "metadata": {"s": "news"}}\n'
        '{"item_id": "x2"}\n'
        "\n"
    )
    report = cat.load_jsonl(path)
    assert report.loaded == 2 and [n for n, _ in report.skipped] == [2, 4]
    assert cat.get("7").text == "Title only" and cat.get("7").metadata == {"s": "news"}
    assert len(cat) == 3


def test_catalog_change_reembeds_once_per_version():
    enc = CountingEncoder()
    cat = ItemCatalog()
    cat.upsert("i1", "first text")
    emb = EventEmbedder(enc, EmbeddingCache(100), cat)
    v1 = emb.embed([ev(item_id="i1"), ev("u2", item_id="i1")]).vectors
    emb.embed([ev(item_id="i1")])
    assert enc.n_texts == 1
    cat.upsert("i1", "first text", metadata={"m": 1})  # same text: same version, no re-embed
    emb.embed([ev(item_id="i1")])
    assert enc.n_texts == 1
    cat.upsert("i1", "second text")
    r = emb.embed([ev(item_id="i1"), ev("u3", item_id="i1")])
    emb.embed([ev(item_id="i1")])
    assert enc.n_texts == 2 and enc.calls[-1] == ["second text"]
    assert r.texts == ["second text", "second text"]
    assert not np.allclose(r.vectors[0], v1[0])


# ------------------------------------------------------------------------------------- event embedder
def test_event_embedder_dedupes_within_batch_and_encodes_misses_once():
    enc = CountingEncoder()
    cat = ItemCatalog()
    cat.upsert("i1", "item one")
    emb = EventEmbedder(enc, EmbeddingCache(100), cat)
    events = [
        ev(text="hello"),
        ev("u2", text="hello"),
        ev("u3", item_id="i1"),
        ev("u4", text="world"),
        ev("u5", item_id="i1", text="ignored, the catalog wins"),
    ]
    r = emb.embed(events)
    assert len(enc.calls) == 1 and sorted(enc.calls[0]) == ["hello", "item one", "world"]
    assert r.ok_index.tolist() == [0, 1, 2, 3, 4] and r.n_encoded == 3
    assert r.texts == ["hello", "hello", "item one", "world", "item one"]
    np.testing.assert_array_equal(r.vectors[0], r.vectors[1])
    np.testing.assert_array_equal(r.vectors[2], r.vectors[4])
    np.testing.assert_allclose(np.linalg.norm(r.vectors, axis=1), 1.0, rtol=1e-5)
    assert emb.cache.misses == 3 and emb.cache.hits == 0
    # second batch: all hits plus one new text, again one encoder call
    r2 = emb.embed([ev(text="world"), ev(text="new"), ev(item_id="i1")])
    assert len(enc.calls) == 2 and enc.calls[1] == ["new"]
    assert emb.cache.hits == 2 and emb.cache.misses == 4
    np.testing.assert_array_equal(r2.vectors[0], r.vectors[3])
    # fully cached batch: the encoder is not called
    emb.embed([ev(text="hello")])
    assert len(enc.calls) == 2


def test_event_embedder_small_cache_still_serves_whole_batch():
    enc = CountingEncoder()
    emb = EventEmbedder(enc, EmbeddingCache(1), ItemCatalog())
    r = emb.embed([ev(text=t) for t in ["a", "b", "c", "a"]])
    assert r.vectors.shape == (4, enc.dim) and len(emb.cache) == 1
    np.testing.assert_array_equal(r.vectors[0], r.vectors[3])


def test_event_embedder_rejections():
    enc = CountingEncoder()
    cat = ItemCatalog()
    cat.upsert("blank", "   ")
    emb = EventEmbedder(enc, EmbeddingCache(10), cat)
    events = [
        ev(item_id="missing"),
        ev(item_id="missing", text="fallback text"),
        ev(text="   "),
        ev(item_id="blank"),
        ev(text="ok"),
    ]
    r = emb.embed(events)
    assert [(i, rej.reason) for i, rej in r.rejections] == [(0, "unknown_item"), (2, "empty_text"), (3, "empty_text")]
    assert r.ok_index.tolist() == [1, 4] and r.texts == ["fallback text", "ok"]
    assert r.vectors.shape == (2, enc.dim)
    assert text_key("fallback text") in emb.cache  # an unknown item with text is keyed by its text


def test_event_embedder_empty_batch():
    emb = EventEmbedder(CountingEncoder(), EmbeddingCache(10))
    r = emb.embed([])
    assert r.vectors.shape == (0, 8) and r.ok_index.shape == (0,) and r.rejections == []


def test_event_embedder_rejects_wrong_encoder_shape():
    class Bad(CountingEncoder):
        def encode(self, texts):
            return np.zeros((len(texts), 3), np.float32)

    with pytest.raises(ValueError, match="shape"):
        EventEmbedder(Bad(), EmbeddingCache(10)).embed([ev(text="x")])


# ------------------------------------------------------------------------------------- real models
@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A tiny static-embedding sentence-transformers model built and saved locally (no network)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers import models as tok_models

    words = ["[UNK]", "[PAD]", "cat", "dog", "fish", "stock", "market", "bond"]
    tok = Tokenizer(tok_models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    weights = np.random.default_rng(0).normal(size=(len(words), 16)).astype(np.float32)
    model = SentenceTransformer(modules=[StaticEmbedding(tok, embedding_weights=weights)], device="cpu")
    path = tmp_path_factory.mktemp("tiny-model")
    model.save(str(path))
    return path, model


def test_sentence_embedder_loads_another_local_model(tiny_model_dir):
    path, original = tiny_model_dir
    enc = SentenceEmbedder(path, device="cpu", batch_size=2)
    assert enc.dim == 16 and enc.device == "cpu" and enc.max_seq_length is None
    texts = ["cat dog", "stock market", "cat dog", "bond fish cat"]
    v = enc.encode(texts)
    assert v.shape == (4, 16) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)
    expected = original.encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(v, expected, rtol=1e-5, atol=1e-6)
    assert enc.encode([]).shape == (0, 16)


def test_sentence_embedder_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError):
        SentenceEmbedder(tmp_path / "nope", device="cpu")


@pytest.fixture(scope="module")
def minilm():
    try:
        default_model_path()
    except FileNotFoundError as exc:  # pragma: no cover - the package is a dependency
        pytest.skip(f"default model not installed: {exc}")
    return SentenceEmbedder(device="cpu", batch_size=16)


def test_default_model_multilingual_shapes_and_semantics(minilm):
    texts = [
        "The stock market fell sharply after the central bank raised interest rates.",
        "Shares tumbled as the Federal Reserve hiked rates again.",
        "My cat loves to sleep in the sun on the windowsill.",
        "Футбольный матч закончился вничью.",
        "今天的天气非常好。",
        "مرحبا بكم في المدينة",
        "🎉🔥🚀",
    ]
    v = minilm.encode(texts)
    assert v.shape == (len(texts), 384) and v.dtype == np.float32 and minilm.dim == 384
    assert np.all(np.isfinite(v))
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    sim = v @ v.T
    assert sim[0, 1] > sim[0, 2] + 0.2  # two finance sentences vs finance/cat
    assert sim[0, 1] > sim[1, 2] + 0.2
    assert minilm.max_seq_length == 256 and minilm.truncated == 0


def test_default_model_counts_truncations():
    enc = SentenceEmbedder(device="cpu", batch_size=8, max_seq_length=16)
    texts = ["short text", "word " * 40, "another short one", "猫" * 30, "🎉" * 30]
    enc.encode(texts)
    assert enc.max_seq_length == 16
    # BERT's tokenizer splits CJK characters one per token; an unknown emoji run is one [UNK]
    lengths = [len(enc.model.tokenizer(t)["input_ids"]) for t in texts]
    assert lengths[3] > 16 >= lengths[4]
    assert enc.truncated == sum(n > 16 for n in lengths) == 2
