"""The live store (`LiveStore`): events, catalog entries and erasures written after an index was
built; SQLite under the index folder by default, PostgreSQL through ``store.url``."""

from promptrec.store.events import ErasureReceipt, IngestReceipt, LiveStore, StoreError, sqlite_url

__all__ = ["ErasureReceipt", "IngestReceipt", "LiveStore", "StoreError", "sqlite_url"]
