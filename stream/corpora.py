"""Labelled corpora: documents with a known topic, to simulate users and measure clustering.

A :class:`Corpus` is a list of :class:`Document` (``item_id``, ``text``, ``topic``). Three sources:

- :func:`demo_corpus` — the built-in demo catalog (``stream/data/demo_catalog.json``): 320
  item titles written for this project, 32 in each of 10 interest areas; free to ship.
- :func:`load_ag_news` — AG News CSV (``class index, title, description``; World, Sports,
  Business, Sci/Tech).
- :func:`load_mind` — MIND ``news.tsv`` (``id, category, subcategory, title, abstract, ...``).

The last two read licensed data by path and are never copied into the repository.

Example:

>>> corpus = demo_corpus()
>>> len(corpus) >= 300, len(corpus.topics) >= 8
(True, True)
>>> doc = corpus.by_topic()["cooking"][0]
>>> doc.item_id, doc.text
('cook-001', 'Cast-iron skillet, 12-inch, pre-seasoned')
>>> small = corpus.subsample(max_per_topic=5, seed=1)
>>> len(small), sorted(small.by_topic()) == corpus.topics
(50, True)
"""

from __future__ import annotations

import csv
import html
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

__all__ = ["AG_NEWS_CLASSES", "Corpus", "Document", "demo_corpus", "load_ag_news", "load_mind"]

AG_NEWS_CLASSES = {1: "World", 2: "Sports", 3: "Business", 4: "Sci/Tech"}


@dataclass(frozen=True)
class Document:
    """One item with its text and its true topic."""

    item_id: str
    text: str
    topic: str


@dataclass
class Corpus:
    """Documents with topics. Item ids are unique."""

    documents: list[Document]
    _by_topic: dict[str, list[Document]] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for doc in self.documents:
            if doc.item_id in seen:
                raise ValueError(f"duplicate item_id {doc.item_id!r}")
            seen.add(doc.item_id)

    def __len__(self) -> int:
        return len(self.documents)

    def by_topic(self) -> dict[str, list[Document]]:
        """Documents grouped by topic, topics in sorted order, documents in corpus order."""
        if self._by_topic is None:
            groups: dict[str, list[Document]] = {}
            for doc in self.documents:
                groups.setdefault(doc.topic, []).append(doc)
            self._by_topic = {topic: groups[topic] for topic in sorted(groups)}
        return self._by_topic

    @property
    def topics(self) -> list[str]:
        """The topics, sorted."""
        return list(self.by_topic())

    def filter_topics(self, *, min_size: int = 1, topics: Iterable[str] | None = None) -> Corpus:
        """Only the topics with at least ``min_size`` documents (and in ``topics``, if given)."""
        wanted = None if topics is None else set(topics)
        keep = {t for t, docs in self.by_topic().items() if len(docs) >= min_size and (wanted is None or t in wanted)}
        return Corpus([d for d in self.documents if d.topic in keep])

    def subsample(self, *, max_per_topic: int, seed: int = 0) -> Corpus:
        """At most ``max_per_topic`` documents of each topic, drawn at random (deterministic per seed)."""
        rng = np.random.default_rng(seed)
        chosen: set[str] = set()
        for docs in self.by_topic().values():
            if len(docs) <= max_per_topic:
                chosen.update(d.item_id for d in docs)
            else:
                picks = rng.choice(len(docs), size=max_per_topic, replace=False)
                chosen.update(docs[int(i)].item_id for i in picks)
        return Corpus([d for d in self.documents if d.item_id in chosen])

    def to_catalog_jsonl(self, path: str | Path) -> Path:
        """Write ``{"item_id", "text", "topic"}`` lines (the item-catalog file format)."""
        path = Path(path)
        with path.open("w", encoding="utf-8") as out:
            for doc in self.documents:
                out.write(json.dumps({"item_id": doc.item_id, "text": doc.text, "topic": doc.topic}) + "\n")
        return path


def demo_corpus() -> Corpus:
    """The built-in demo catalog as a corpus."""
    raw = resources.files("stream").joinpath("data/demo_catalog.json").read_text(encoding="utf-8")
    items = json.loads(raw)["items"]
    return Corpus([Document(item_id=i["item_id"], text=i["text"], topic=i["topic"]) for i in items])


_AG_ENTITY = re.compile(r"#(\d{2,4});")


def _clean_ag(text: str) -> str:
    # AG News keeps HTML entities with their '&' lost (" #36;" is "$") and writes newlines as "\n".
    text = _AG_ENTITY.sub(lambda m: chr(int(m.group(1))), text.replace("\\n", " ").replace("\\", " "))
    return " ".join(html.unescape(text).split())


def load_ag_news(path: str | Path) -> Corpus:
    """AG News from its CSV (or a folder holding ``test.csv``): text = title + ". " + description."""
    path = Path(path)
    if path.is_dir():
        path = path / "test.csv"
    documents = []
    with path.open(encoding="utf-8", newline="") as handle:
        for row_no, row in enumerate(csv.reader(handle), 1):
            if len(row) != 3 or not row[0].strip().isdigit():
                raise ValueError(f"{path}:{row_no}: expected 'class index, title, description'")
            topic = AG_NEWS_CLASSES.get(int(row[0]))
            if topic is None:
                raise ValueError(f"{path}:{row_no}: class index {row[0]} not in 1..4")
            title, description = _clean_ag(row[1]), _clean_ag(row[2])
            text = f"{title}. {description}" if description else title
            documents.append(Document(item_id=f"ag-{row_no:05d}", text=text, topic=topic))
    return Corpus(documents)


def load_mind(path: str | Path, *, min_topic_size: int = 1) -> Corpus:
    """MIND ``news.tsv`` (or a folder holding it): topic = category, text = title + ". " + abstract."""
    path = Path(path)
    if path.is_dir():
        path = path / "news.tsv"
    documents = []
    with path.open(encoding="utf-8") as handle:
        for row_no, line in enumerate(handle, 1):
            fields = line.rstrip("\n").split("\t")
            if len(fields) < 5:
                raise ValueError(f"{path}:{row_no}: expected at least 5 tab-separated fields")
            news_id, category, _sub, title, abstract = (f.strip() for f in fields[:5])
            if not news_id or not category or not title:
                continue
            text = f"{title}. {abstract}" if abstract else title
            documents.append(Document(item_id=news_id, text=text, topic=category))
    corpus = Corpus(documents)
    return corpus.filter_topics(min_size=min_topic_size) if min_topic_size > 1 else corpus
