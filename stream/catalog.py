"""Item catalog: what an ``item_id`` in an event means, as text to embed.

Events may name an item (``item_id``) instead of, or as well as, carrying text. The
catalog maps each item id to its text, a *version* and free-form metadata. The version
starts at 1 and is bumped only when the item's text changes, so the embedding cache
(keyed ``item:{item_id}@{version}``) re-embeds an item exactly once per version of its
text, and a metadata-only update costs nothing.

Example:

>>> catalog = ItemCatalog()
>>> catalog.upsert("i1", "Lakers win the final")
1
>>> catalog.upsert("i1", "Lakers win the final", metadata={"section": "sport"})
1
>>> catalog.upsert("i1", "Lakers lose the final")
2
>>> catalog.get("i1").text, catalog.get("i1").version, len(catalog)
('Lakers lose the final', 2, 1)
>>> catalog.remove("i1"), catalog.get("i1")
(True, None)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

__all__ = ["CatalogItem", "ItemCatalog", "CatalogLoadReport"]


@dataclass(frozen=True, slots=True)
class CatalogItem:
    """One item: the text embedded for it, its text version and metadata."""

    item_id: str
    text: str
    version: int
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class CatalogLoadReport:
    """What :meth:`ItemCatalog.load_jsonl` did: lines loaded and lines skipped (with why)."""

    loaded: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)


class _ItemLine(msgspec.Struct):
    item_id: str | int
    text: str | None = None
    title: str | None = None
    metadata: dict[str, Any] | None = None


_line_decoder = msgspec.json.Decoder(_ItemLine)


class ItemCatalog:
    """In-memory ``item_id -> (text, version, metadata)``.

    A removed item that comes back continues its version sequence (versions are never
    reused for an item id), so a stale cached embedding can never be served for it.
    """

    def __init__(self) -> None:
        self._items: dict[str, CatalogItem] = {}
        self._last_version: dict[str, int] = {}

    def upsert(self, item_id: str, text: str, metadata: dict[str, Any] | None = None) -> int:
        """Insert or update an item; return its version (bumped only when the text changed)."""
        item_id = str(item_id)
        current = self._items.get(item_id)
        if current is not None and current.text == text:
            version = current.version
        else:
            version = self._last_version.get(item_id, 0) + 1
            self._last_version[item_id] = version
        if metadata is None:
            metadata = current.metadata if current is not None else {}
        self._items[item_id] = CatalogItem(item_id, text, version, dict(metadata))
        return version

    def remove(self, item_id: str) -> bool:
        """Forget an item; return whether it was present."""
        return self._items.pop(str(item_id), None) is not None

    def get(self, item_id: str) -> CatalogItem | None:
        """The item, or ``None`` when unknown."""
        return self._items.get(item_id)

    @property
    def mapping(self) -> Mapping[str, CatalogItem]:
        """The live ``item_id -> CatalogItem`` mapping (read it, do not modify it)."""
        return self._items

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._items

    def __iter__(self) -> Iterator[CatalogItem]:
        return iter(list(self._items.values()))

    def load_jsonl(self, path: str | Path) -> CatalogLoadReport:
        """Upsert every line of a JSONL file ``{"item_id", "text" (or "title"), "metadata"?}``.

        Bad lines (not JSON, no item id, no text) are skipped and reported, never fatal.
        """
        report = CatalogLoadReport()
        with open(path, "rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                try:
                    line = _line_decoder.decode(raw)
                except msgspec.DecodeError as exc:
                    report.skipped.append((lineno, str(exc)))
                    continue
                text = line.text if line.text is not None else line.title
                if text is None or not text.strip():
                    report.skipped.append((lineno, "no text"))
                    continue
                self.upsert(str(line.item_id), text, line.metadata)
                report.loaded += 1
        return report
