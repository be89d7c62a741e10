"""The held copy: stored documents of the dossiers (and their findings) of the partitions this
instance owns, compressed in memory. Why and when it is loaded, kept and dropped:
docs/architecture.md, "Held partitions".
"""
from __future__ import annotations

import zlib
from typing import Iterable


class StateCache:
    """The stored documents of the dossiers of the partitions this instance owns (derived data).

    Loaded in one scan of `dossiers` and one of `findings` when partitions are assigned, kept in
    step with every write this instance makes, dropped when the partitions are revoked (and
    rebuilt from the store on the next assignment or after a StaleWrite). Documents are held as
    compressed BSON (what the store returned, with its millisecond instants) to keep memory small;
    a closed dossier (no next check) is held as a marker only and read by _id if touched again.
    MongoDB stays the source of truth: nothing here is written anywhere.
    """

    def __init__(self):
        from bson.codec_options import CodecOptions
        self._opts = CodecOptions(tz_aware=True)
        self._zdict: bytes | None = None
        self.docs: dict[int, dict[str, bytes | None]] = {}     # partition -> code -> doc | marker
        self.findings: dict[str, bytes] = {}                    # code -> {"f": [finding docs]}

    def holds(self, partition: int | None) -> bool:
        return partition is not None and partition in self.docs

    def partitions(self) -> set[int]:
        return set(self.docs)

    # Held documents are BSON compressed with raw deflate against a preset dictionary: the first
    # document this cache encodes (documents of one office share most of their bytes: field
    # names, codes, rule sets), so a held document takes a fraction of its BSON size.
    def encode(self, doc: dict) -> bytes:
        import bson
        return self.compress(bson.encode(doc))

    def compress(self, raw: bytes) -> bytes:
        """A document's BSON, compressed as held."""
        if self._zdict is None:
            self._zdict = raw
        c = zlib.compressobj(6, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, self._zdict)
        return c.compress(raw) + c.flush()

    def decode(self, packed: bytes) -> dict:
        import bson
        d = zlib.decompressobj(-15, self._zdict)
        return bson.decode(d.decompress(packed) + d.flush(), codec_options=self._opts)

    def put_dossier(self, partition: int, doc: dict, raw: bytes | None = None) -> None:
        """Hold a stored dossier document (`raw`: its BSON when already encoded)."""
        part = self.docs.setdefault(partition, {})
        if doc.get("next_check_at") is None:
            part[doc["_id"]] = None
        else:
            part[doc["_id"]] = self.compress(raw) if raw is not None else self.encode(doc)

    def put_findings(self, code: str, docs: list[dict]) -> None:
        if docs:
            self.findings[code] = self.encode({"f": docs})
        else:
            self.findings.pop(code, None)

    def findings_of(self, code: str) -> dict[str, dict]:
        raw = self.findings.get(code)
        return {d["_id"]: d for d in self.decode(raw)["f"]} if raw else {}

    def drop(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            for code in self.docs.pop(p, {}):
                self.findings.pop(code, None)

    def size(self) -> int:
        return sum(len(d) for d in self.docs.values())
