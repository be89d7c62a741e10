"""Versioned reference data in MongoDB (the procedure catalog, the agency directory).

`<name>_versions` holds one document per distinct content (`_id` = content hash) with its records
and every import (`imports: [{at, source}]`); `<name>_current` holds one pointer document
`{_id: "current", version, updated_at}`. An import writes the version document completely, then
flips the pointer: no transactions needed (FerretDB has none), and a reader never sees half an
import. Old versions stay, so past alerts and due dates keep the data in force then.
"""
from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Callable


class VersionedStore:
    """Base of CatalogStore and DirectoryStore: subclasses set the names and the record loader."""

    VERSIONS: str
    CURRENT: str
    FIELD: str                                   # key of the records in a version document
    from_records: Callable[[list, str], Any]     # records, origin name -> loaded object
    load_file: Callable[[Any], Any]              # file path -> loaded object (validated)

    def __init__(self, db):
        self.db = db

    @classmethod
    def current_or_file(cls, path, db=None):
        """The reference data services use: the version last imported into `db` (`motcua catalog
        import`, `motcua directory import`) when given and holding one, else the file `path`.

        A store that cannot be read raises (pymongo's error): a service must not quietly run on
        other reference data than its peers. Read once by each service at start (no live reload)."""
        if db is not None:
            store = cls(db)
            version = store.current_version()
            obj = store.at(version) if version is not None else None
            if obj is not None:
                logging.getLogger("motcua.refdata").info("%s: version %s imported into MongoDB",
                                                         cls.VERSIONS, version)
                return obj
        return cls.load_file(path)

    @classmethod
    def origin(cls, obj) -> str:
        """Where `obj` (from `current_or_file`) came from, for messages: the version imported
        into MongoDB, or the file."""
        source = getattr(obj, "source", "") or ""
        if source.startswith(cls.VERSIONS + "/"):
            return f"version {obj.version} imported into MongoDB ({cls.VERSIONS})"
        return f"file {source}"

    def store(self, obj, imported_at: datetime, source: str = "") -> str:
        """Store `obj` (having `.version` and `.records`) as the current version; returns it."""
        if imported_at.tzinfo is None or imported_at.utcoffset() is None:
            raise ValueError("imported_at must be an aware UTC instant")
        self.db[self.VERSIONS].update_one(
            {"_id": obj.version},
            {"$setOnInsert": {self.FIELD: obj.records, "first_imported_at": imported_at},
             "$push": {"imports": {"at": imported_at, "source": source}}},
            upsert=True)
        self.db[self.CURRENT].update_one(
            {"_id": "current"},
            {"$set": {"version": obj.version, "updated_at": imported_at}}, upsert=True)
        return obj.version

    def at(self, version: str):
        """The data of an earlier (or the current) version, None if unknown."""
        doc = self.db[self.VERSIONS].find_one({"_id": version})
        if doc is None:
            return None
        return type(self).from_records(doc[self.FIELD], f"{self.VERSIONS}/{version}")

    def current_version(self) -> str | None:
        ptr = self.db[self.CURRENT].find_one({"_id": "current"})
        return ptr["version"] if ptr else None

    def current(self):
        """The latest import, None before the first."""
        version = self.current_version()
        return self.at(version) if version else None

    def history(self) -> list[dict]:
        """Every import, oldest first: [{version, at, source}]."""
        out = []
        for doc in self.db[self.VERSIONS].find({}, {"imports": 1}):
            for imp in doc.get("imports", []):
                out.append({"version": doc["_id"], "at": imp["at"], "source": imp.get("source", "")})
        return sorted(out, key=lambda r: r["at"])

