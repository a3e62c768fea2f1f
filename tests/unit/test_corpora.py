"""Labelled corpora: the built-in demo catalog and the AG News / MIND loaders."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from stream.corpora import AG_NEWS_CLASSES, Corpus, Document, demo_corpus, load_ag_news, load_mind
from stream.events import BehaviourEvent, decode_event

DATA = Path("/work/shared/data")
AG_NEWS = DATA / "ag-news" / "test.csv"
MIND = DATA / "mind-small-subset" / "news.tsv"


def test_demo_catalog_is_large_varied_and_clean():
    corpus = demo_corpus()
    sizes = {topic: len(docs) for topic, docs in corpus.by_topic().items()}
    assert len(corpus) >= 300 and len(sizes) >= 8
    assert min(sizes.values()) >= 20
    texts = [d.text for d in corpus.documents]
    assert len(set(texts)) == len(texts)
    prefixes = collections.defaultdict(set)
    for doc in corpus.documents:
        prefixes[doc.topic].add(doc.item_id.split("-")[0])
        assert doc.text == doc.text.strip() and 3 <= len(doc.text) <= 120
        assert isinstance(decode_event(f'{{"user_id": "u", "ts": 1, "item_id": "{doc.item_id}"}}'), BehaviourEvent)
    assert all(len(p) == 1 for p in prefixes.values())


def test_corpus_helpers():
    corpus = Corpus([Document("a1", "x", "a"), Document("a2", "y", "a"), Document("b1", "z", "b")])
    assert corpus.topics == ["a", "b"]
    assert corpus.filter_topics(min_size=2).topics == ["a"]
    assert corpus.filter_topics(topics=["b"]).topics == ["b"]
    assert len(corpus.subsample(max_per_topic=1, seed=0)) == 2
    with pytest.raises(ValueError, match="duplicate"):
        Corpus([Document("a1", "x", "a"), Document("a1", "y", "b")])


def test_catalog_jsonl(tmp_path):
    import json

    path = demo_corpus().subsample(max_per_topic=2).to_catalog_jsonl(tmp_path / "items.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 20 and set(rows[0]) == {"item_id", "text", "topic"}


def test_ag_news_parser_on_a_made_up_file(tmp_path):
    path = tmp_path / "test.csv"
    path.write_text(
        '"3","Oil hits #36;50 (Reuters)","Prices rose\\today, traders said\\n again."\n'
        '"2","Cup final","A ""great"" game &lt;3"\n'
    )
    corpus = load_ag_news(tmp_path)
    assert [(d.item_id, d.topic) for d in corpus.documents] == [("ag-00001", "Business"), ("ag-00002", "Sports")]
    assert corpus.documents[0].text == "Oil hits $50 (Reuters). Prices rose today, traders said again."
    assert corpus.documents[1].text == 'Cup final. A "great" game <3'
    path.write_text('"9","x","y"\n')
    with pytest.raises(ValueError, match="class index"):
        load_ag_news(path)


def test_mind_parser_on_a_made_up_file(tmp_path):
    path = tmp_path / "news.tsv"
    path.write_text(
        "N1\tsports\tsoccer\tBig win\tThe team won.\thttps://x\t[]\t[]\n"
        "N2\tfinance\tmarkets\tStocks up\t\thttps://x\t[]\t[]\n"
        "N3\tsports\tnfl\tTouchdown\tA late score.\thttps://x\t[]\t[]\n"
    )
    corpus = load_mind(path)
    assert [(d.item_id, d.topic, d.text) for d in corpus.documents] == [
        ("N1", "sports", "Big win. The team won."),
        ("N2", "finance", "Stocks up"),
        ("N3", "sports", "Touchdown. A late score."),
    ]
    assert load_mind(tmp_path, min_topic_size=2).topics == ["sports"]


@pytest.mark.skipif(not AG_NEWS.exists(), reason=f"AG News test split not found at {AG_NEWS} (licensed, not shipped)")
def test_real_ag_news():
    corpus = load_ag_news(AG_NEWS)
    assert len(corpus) == 7600
    assert {t: len(d) for t, d in corpus.by_topic().items()} == {t: 1900 for t in AG_NEWS_CLASSES.values()}
    assert not any("#36;" in d.text or "\\" in d.text for d in corpus.documents)


@pytest.mark.skipif(not MIND.exists(), reason=f"MIND-small subset not found at {MIND} (licensed, not shipped)")
def test_real_mind():
    corpus = load_mind(MIND)
    assert len(corpus) == 2000 and len(corpus.topics) == 15
    assert len(corpus.by_topic()["sports"]) == 597
    assert len(load_mind(MIND, min_topic_size=20).topics) == 13
