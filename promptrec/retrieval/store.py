"""Item vectors in Chroma: one collection per vector kind (text, behaviour), with the
encoder, its dimension and a fingerprint of what the vectors were built from recorded in
the collection's metadata, so that a mismatch is an error rather than wrong results."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from promptrec.config import ChromaSettings
from promptrec.errors import FilterError, IndexMismatchError, PromptrecError
from promptrec.paths import disk_full, is_disk_full

Space = Literal["cosine", "ip"]
UPSERT_BATCH = 512


def chroma_location(chroma: ChromaSettings, folder: Path) -> str:
    """Where the vectors live, as error messages name it (``folder``: the embedded store's)."""
    if chroma.mode == "http":
        return f"the Chroma server at http://{chroma.host}:{chroma.port}"
    return f"the Chroma store {folder}"


@contextlib.contextmanager
def chroma_errors(location: str, what: str, folder: Path | None = None) -> Iterator[None]:
    """Turn the errors Chroma and its HTTP client raise into promptrec errors naming the store
    (``folder``: the embedded store's, whose disk may be full)."""
    import httpx
    from chromadb.errors import ChromaError

    try:
        yield
    except PromptrecError:
        raise
    except (httpx.HTTPError, ConnectionError, TimeoutError) as exc:
        raise PromptrecError(
            f"{location} did not answer during {what} ({type(exc).__name__}: {exc}); start it "
            "(`chroma run --path DIR --port PORT`) or set chroma.mode = \"persistent\""
        ) from exc
    except Exception as exc:
        if is_disk_full(exc) and folder is not None:
            raise disk_full(folder, what) from exc
        if not isinstance(exc, ChromaError):
            raise
        raise IndexMismatchError(
            f"{location} failed during {what}: {exc}; if its files are damaged, run `promptrec index --rebuild`"
        ) from exc


def release_persistent_store(folder: Path) -> None:
    """Stop Chroma's in-process system for the embedded store in ``folder`` (the next client
    opens it afresh from its files)."""
    from chromadb.api.shared_system_client import SharedSystemClient

    system = SharedSystemClient._identifier_to_system.pop(str(folder), None)
    SharedSystemClient._identifier_to_refcount.pop(str(folder), None)
    if system is not None:
        with contextlib.suppress(Exception):
            system.stop()


def drop_persistent_store(folder: Path) -> None:
    """Delete the embedded Chroma store in ``folder`` (and Chroma's in-process cache of it)."""
    import shutil

    release_persistent_store(folder)
    shutil.rmtree(folder, ignore_errors=True)


def chroma_client(chroma: ChromaSettings, folder: Path):
    """A persistent client on the embedded store in ``folder``, or an HTTP client for a
    `chroma run` server."""
    import chromadb
    from chromadb.config import Settings as ChromaClientSettings

    from promptrec.paths import ensure_dir

    client_settings = ChromaClientSettings(anonymized_telemetry=False)
    if chroma.mode == "http":
        try:
            client = chromadb.HttpClient(host=chroma.host, port=chroma.port, settings=client_settings)
            client.promptrec_location = chroma_location(chroma, folder)  # for error messages
            return client
        except Exception as exc:  # chromadb raises ValueError/ConnectionError variants
            raise PromptrecError(
                f"cannot reach the Chroma server at http://{chroma.host}:{chroma.port} ({exc}); "
                "start one with `chroma run --path DIR --port PORT` or set chroma.mode = \"persistent\""
            ) from exc
    ensure_dir(folder.parent, "index folder")
    with chroma_errors(chroma_location(chroma, folder), "opening", folder):
        client = chromadb.PersistentClient(path=str(folder), settings=client_settings)
    client.promptrec_location = chroma_location(chroma, folder)  # for error messages
    client.promptrec_folder = folder
    return client


def collection_name(namespace: str, kind: str, version: str = "") -> str:
    """A valid Chroma collection name (3-63 chars of [A-Za-z0-9._-], alphanumeric ends); an
    index version's own name on a shared Chroma server (``version``)."""
    raw = re.sub(r"[^A-Za-z0-9._-]+", "-", "-".join(p for p in (namespace, version, kind) if p)).strip("-._")
    if len(raw) > 63:
        import hashlib

        raw = raw[:54].rstrip("-._") + "-" + hashlib.sha256(raw.encode()).hexdigest()[:8]
    return raw if len(raw) >= 3 else raw + "-pr"


class SyncReport(BaseModel):
    """What an upsert pass changed."""

    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0


class ExactSearch:
    """Exact nearest items over a matrix of item vectors: every similarity computed, ties broken
    by item id. The same vectors give the same list in every process, which HNSW's approximate
    search does not promise."""

    def __init__(self, ids: Sequence[str], vectors: np.ndarray, space: Space):
        self.ids = list(ids)
        self.space = space
        matrix = np.asarray(vectors, dtype=np.float32)
        matrix = matrix.reshape(len(self.ids), -1) if self.ids else matrix.reshape(0, matrix.shape[-1] if matrix.ndim else 0)
        self.matrix = unit_rows(matrix) if space == "cosine" else matrix
        self.row = {item_id: n for n, item_id in enumerate(self.ids)}
        self._id_rank = np.empty(len(self.ids), dtype=np.int64)  # where each id sorts among the ids
        self._id_rank[np.argsort(np.asarray(self.ids, dtype=object), kind="stable")] = np.arange(len(self.ids))

    def __len__(self) -> int:
        return len(self.ids)

    def with_rows(self, ids: Sequence[str], vectors: np.ndarray) -> ExactSearch:
        """This search with the rows of ``ids`` replaced by (or extended with) ``vectors``."""
        if not len(ids):
            return self
        matrix = np.asarray(vectors, dtype=np.float32).reshape(len(ids), -1)
        if self.space == "cosine":
            matrix = unit_rows(matrix)
        new = [n for n, item_id in enumerate(ids) if item_id not in self.row]
        out = ExactSearch([*self.ids, *(ids[n] for n in new)], np.concatenate([self.matrix, matrix[new]]), self.space)
        for n, item_id in enumerate(ids):
            if item_id in self.row:
                out.matrix[self.row[item_id]] = matrix[n]
        return out

    def vectors(self, ids: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """The vectors of those ``ids`` that are here, each once (cosine: unit length)."""
        found = [i for i in dict.fromkeys(ids) if i in self.row]
        return found, self.matrix[[self.row[i] for i in found]]

    def top(self, vector: np.ndarray, n: int, exclude: set[str] = frozenset(),
            allowed: set[str] | None = None) -> list[tuple[str, float]]:
        """Top-n (item id, similarity) for a query vector, skipping ``exclude`` and, with
        ``allowed``, every id not in it."""
        if n <= 0 or not self.ids:
            return []
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        if self.space == "cosine":
            norm = float(np.linalg.norm(query))
            query = query / norm if norm > 0 else query
        scores = self.matrix @ query
        want = min(len(scores), n + len(exclude) + (len(self.ids) if allowed is not None else 0))
        if want < len(scores):
            # everything at least as similar as the want-th best: ties at the cut stay together
            cut = np.partition(scores, len(scores) - want)[len(scores) - want]
            rows = np.flatnonzero(scores >= cut)
        else:
            rows = np.arange(len(scores))
        rows = rows[np.lexsort((self._id_rank[rows], -scores[rows]))]
        out: list[tuple[str, float]] = []
        for row in rows:
            item_id = self.ids[row]
            if item_id in exclude or (allowed is not None and item_id not in allowed):
                continue
            out.append((item_id, float(scores[row])))
            if len(out) == n:
                break
        return out


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Each row scaled to unit length (a zero row stays zero)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


class ItemVectorCollection:
    """One Chroma collection of item vectors plus the metadata that says how they were made."""

    def __init__(self, client, name: str, space: Space, identity: dict[str, Any], exact_max_items: int = 0):
        """`identity` (e.g. encoder, dimension) must match what the collection was built with.
        A collection of at most ``exact_max_items`` items is searched exactly (`ExactSearch`, its
        vectors read once), a larger one through Chroma's HNSW index."""
        self.name = name
        self.space = space
        self.identity = identity
        self.exact_max_items = exact_max_items
        self.location = getattr(client, "promptrec_location", "the Chroma store")
        self.folder = getattr(client, "promptrec_folder", None)  # None on a Chroma server
        self._client = client
        self._exact: ExactSearch | None = None
        self._open()

    def _open(self) -> None:
        with self._errors(f"opening collection {self.name!r}"):
            self._collection = self._client.get_or_create_collection(
                self.name,
                configuration={"hnsw": {"space": self.space, "ef_construction": 200, "ef_search": 200}},
                metadata={"promptrec": True, **self.identity},
            )

    def vectors_readable(self, probes: int = 3) -> bool:
        """Whether the vector index answers: a few stored vectors (read from SQLite), queried,
        find something at least as near as the vector itself is (distance 0 for cosine, 1 - |v|^2
        for inner product). A damaged HNSW segment file raises or answers farther, while the item
        list (kept in SQLite) still looks complete."""
        try:
            if self._collection.count() == 0:
                return True
            got = self._collection.get(limit=probes, include=["embeddings"])
            vectors = np.asarray(got["embeddings"], dtype=np.float32)
            found = self._collection.query(query_embeddings=vectors, n_results=1, include=["distances"])
        except Exception:  # noqa: BLE001 - any failure to answer means the segment is unreadable
            return False
        own = 1.0 - (vectors.astype(np.float64) ** 2).sum(axis=1) if self.space == "ip" else np.zeros(len(vectors))
        return all(bool(d) and float(d[0]) <= o + 1e-3 * max(1.0, abs(o)) for d, o in zip(found["distances"], own))

    def recreate(self) -> None:
        """Drop the collection and start it empty (its vectors are written again by `sync`)."""
        with self._errors(f"recreating collection {self.name!r}"):
            self._client.delete_collection(self.name)
        self._exact = None
        self._open()

    def delete(self) -> None:
        """Drop the collection (a scratch collection a build no longer needs)."""
        with self._errors(f"deleting collection {self.name!r}"):
            self._client.delete_collection(self.name)
        self._exact = None

    def _errors(self, what: str):
        return chroma_errors(self.location, what, self.folder)

    def _filter_errors(self, where: dict[str, Any] | None):
        """Chroma's ValueError for a malformed `where` becomes a PromptrecError quoting the filter."""

        @contextlib.contextmanager
        def wrap() -> Iterator[None]:
            try:
                with self._errors(f"a query of {self.name!r}"):
                    yield
            except ValueError as exc:
                if where is None or "where" not in str(exc):
                    raise
                raise FilterError(f"invalid metadata filter {where!r}: {exc}") from exc

        return wrap()

    def metadata(self) -> dict[str, Any]:
        return dict(self._collection.metadata or {})

    def count(self) -> int:
        with self._errors(f"counting {self.name!r}"):
            return self._collection.count()

    def check_identity(self, allow_empty: bool = True) -> None:
        """Raise IndexMismatchError when the stored vectors were built differently."""
        stored = self.metadata()
        if allow_empty and self.count() == 0:
            return
        for key, expected in self.identity.items():
            if key in stored and stored[key] != expected:
                raise IndexMismatchError(
                    f"Chroma collection {self.name!r} was built with {key}={stored[key]!r}, "
                    f"but this recommender uses {key}={expected!r}; rebuild it with "
                    "`promptrec index --rebuild` (or use the settings it was built with)"
                )

    def set_metadata(self, **values: Any) -> None:
        meta = {k: v for k, v in self.metadata().items() if not k.startswith("hnsw:")}
        meta.update(values)
        with self._errors(f"updating {self.name!r}"):
            self._collection.modify(metadata=meta)

    def content_hashes(self) -> dict[str, str]:
        """item id → the content hash stored with its vector."""
        with self._errors(f"reading {self.name!r}"):
            got = self._collection.get(include=["metadatas"])
        return {i: (m or {}).get("content_hash", "") for i, m in zip(got["ids"], got["metadatas"])}

    def sync(
        self,
        ids: Sequence[str],
        content_hashes: Sequence[str],
        metadatas: Sequence[dict[str, Any]],
        vectors_for: Callable[[list[int]], np.ndarray],
        on_progress: Callable[[int, int], None] | None = None,
    ) -> SyncReport:
        """Upsert only the items whose content hash changed; delete items no longer present.

        `vectors_for(positions)` computes vectors for the given positions of `ids` only, so
        unchanged items are never re-encoded; `on_progress(advance, total)` reports progress.
        """
        self._exact = None
        stored = self.content_hashes()
        wanted = dict(zip(ids, content_hashes))
        removed = [i for i in stored if i not in wanted]
        if removed:
            with self._errors(f"deleting from {self.name!r}"):
                self._collection.delete(ids=removed)
        todo = [n for n, (i, h) in enumerate(zip(ids, content_hashes)) if stored.get(i) != h]
        report = SyncReport(
            added=sum(1 for n in todo if ids[n] not in stored),
            updated=sum(1 for n in todo if ids[n] in stored),
            removed=len(removed),
            unchanged=len(ids) - len(todo),
        )
        if on_progress:
            on_progress(0, len(todo))
        for start in range(0, len(todo), UPSERT_BATCH):
            batch = todo[start : start + UPSERT_BATCH]
            vectors = vectors_for(batch)
            with self._errors(f"writing to {self.name!r}"):
                self._collection.upsert(
                    ids=[ids[n] for n in batch],
                    embeddings=vectors.astype(np.float32),
                    metadatas=[{**metadatas[n], "content_hash": content_hashes[n]} for n in batch],
                )
            if on_progress:
                on_progress(len(batch), len(todo))
        return report

    def sync_some(self, ids: Sequence[str], content_hashes: Sequence[str], metadatas: Sequence[dict[str, Any]],
                  vectors: np.ndarray) -> None:
        """Upsert these items' vectors (the others stay as they are; an exact search already
        read takes them in place)."""
        with self._errors(f"writing to {self.name!r}"):
            self._collection.upsert(
                ids=list(ids), embeddings=np.asarray(vectors, dtype=np.float32),
                metadatas=[{**m, "content_hash": h} for m, h in zip(metadatas, content_hashes)],
            )
        if self._exact is not None:
            self._exact = self._exact.with_rows(list(ids), np.asarray(vectors, dtype=np.float32))

    def copy_from(self, other: ItemVectorCollection) -> None:
        """Make this (empty) collection hold what ``other`` holds: vectors, item metadata and
        the collection's own metadata (a new index version starts from the served one)."""
        self._exact = None
        with other._errors(f"reading {other.name!r}"):
            got = other._collection.get(include=["embeddings", "metadatas"])
        for start in range(0, len(got["ids"]), UPSERT_BATCH):
            end = start + UPSERT_BATCH
            with self._errors(f"writing to {self.name!r}"):
                self._collection.upsert(ids=got["ids"][start:end],
                                        embeddings=np.asarray(got["embeddings"][start:end], dtype=np.float32),
                                        metadatas=got["metadatas"][start:end])
        self.set_metadata(**{k: v for k, v in other.metadata().items() if k not in self.identity})

    def vectors(self, ids: Sequence[str] | None = None) -> tuple[list[str], np.ndarray]:
        """Stored vectors (all, or those of `ids` that exist, each once), as (ids, matrix)."""
        wanted = list(dict.fromkeys(ids)) if ids is not None else None  # Chroma refuses a repeated id
        with self._errors(f"reading {self.name!r}"):
            got = self._collection.get(ids=wanted, include=["embeddings"])
        embeddings = got["embeddings"]
        if embeddings is None or len(embeddings) == 0:
            return [], np.zeros((0, int(self.identity.get("dimension", 0))), dtype=np.float32)
        return list(got["ids"]), np.asarray(embeddings, dtype=np.float32)

    def ids_matching(self, where: dict[str, Any]) -> set[str]:
        """Item ids whose metadata match a Chroma `where` filter."""
        with self._filter_errors(where):
            return set(self._collection.get(where=where, include=[])["ids"])

    def exact_search(self) -> ExactSearch | None:
        """The collection's vectors as an `ExactSearch` (read from Chroma once, then kept), or
        None when it holds more than ``exact_max_items`` items."""
        if self._exact is None:
            if self.count() > self.exact_max_items:
                return None
            self._exact = ExactSearch(*self.vectors(), self.space)
        return self._exact

    def query(
        self,
        vector: np.ndarray,
        n: int,
        exclude: set[str] = frozenset(),
        where: dict[str, Any] | None = None,
    ) -> list[tuple[str, float]]:
        """Top-n (item id, similarity) for a query vector, skipping `exclude`; ties in item-id order."""
        exact = self.exact_search()
        if exact is not None:
            allowed = self.ids_matching(where) if where is not None else None
            return exact.top(vector, n, exclude, allowed)
        total = self.count()
        if total == 0 or n <= 0:
            return []
        n_results = min(total, n + len(exclude))
        with self._filter_errors(where):
            result = self._collection.query(
                query_embeddings=[np.asarray(vector, dtype=np.float32)],
                n_results=n_results,
                where=where,
                include=["distances"],
            )
        # Chroma's cosine distance is 1 - cos and its ip distance 1 - dot: both give 1 - d.
        found = sorted(((1.0 - float(d), i) for i, d in zip(result["ids"][0], result["distances"][0])),
                       key=lambda pair: (-pair[0], pair[1]))
        return [(item_id, similarity) for similarity, item_id in found if item_id not in exclude][:n]
