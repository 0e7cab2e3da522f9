"""The retrieval index: text, behaviour and sequential-model vectors in Chroma, transitions
and popularity in a file beside them, the sequential model's checkpoint, and a manifest that
ties them to one catalog, log and encoder.

A build never touches the version being served: it writes a new version beside it (a copy
of the served one that it updates, or with ``rebuild`` an empty one), switches the index's
pointer to it atomically, and deletes versions older than the one it replaced
(`promptrec.index_layout`). A server notices the switch and opens the new version; a failed
build leaves the served version as it was. Files are verified when opened: a damaged one is an
`IndexMismatchError` naming it and `promptrec index --rebuild`. A build holds an exclusive
lock on the index folder's build lock (`IndexLayout.build_lock`), so two concurrent builds of
one index run one after the other."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel

from promptrec.config import RetrievalSettings, Settings, SplitSettings
from promptrec.data.schema import Item
from promptrec.errors import IndexMismatchError
from promptrec.index_layout import IndexLayout, VersionLayout
from promptrec.keys import ArtifactKey
from promptrec.paths import DiskFullError, atomic_write, atomic_write_text, disk_full, ensure_dir, file_lock, is_disk_full
from promptrec.retrieval.encoder import TextEncoder
from promptrec.retrieval.sasrec import (
    DamagedCheckpointError,
    RETRAIN,
    CheckpointMismatchError,
    EpochStats,
    SequentialModel,
    checkpoint_key,
)
from promptrec.retrieval.sources import BehaviourModel, TransitionModel, popularity
from promptrec.retrieval.weights import FusionFit, choose_weights, holdout_split, sample_users, all_source_rankings
from promptrec.retrieval.store import (
    ExactSearch,
    ItemVectorCollection,
    SyncReport,
    chroma_client,
    collection_name,
    drop_persistent_store,
)

if TYPE_CHECKING:  # pragma: no cover
    from promptrec.store.events import LiveStore

_SPACES = {"text": "cosine", "behaviour": "ip", "sequential": "ip"}  # each vector kind's distance
_HOLDOUT = "behaviour-holdout"  # the scratch collection of a build's weight fit
REBUILD_HINT = "run `promptrec index --rebuild` to build it again from the data"
log = logging.getLogger("promptrec")
ProgressFn = Callable[[str, int, int], None]  # (stage, advance, total)


def catalog_fingerprint(items: Sequence[Item]) -> str:
    digest = hashlib.sha256()
    for item in sorted(items, key=lambda it: it.item_id):
        digest.update(f"{item.item_id}\x1f{item.text()}\x1e".encode())
    return digest.hexdigest()[:16]


def interactions_fingerprint(histories: Mapping[str, Sequence[str]]) -> str:
    digest = hashlib.sha256()
    for user in sorted(histories):
        digest.update(("\x1f".join([user, *histories[user]]) + "\x1e").encode())
    return digest.hexdigest()[:16]


def content_hash(item: Item) -> str:
    return hashlib.sha256(item.text().encode()).hexdigest()[:16]


class IndexKey(ArtifactKey):
    """What an index is valid for: the namespace, encoder, catalog and interaction log."""

    namespace: str
    encoder: str
    catalog_fingerprint: str
    interactions_fingerprint: str


class IndexManifest(BaseModel):
    """What an index was built from; checked whenever it is opened."""

    namespace: str
    encoder: str
    text_dimension: int
    behaviour_dimension: int
    catalog_fingerprint: str
    interactions_fingerprint: str
    item_ids: list[str]  # the item order behind the transitions file
    n_users: int
    build_seconds: float
    text_sync: SyncReport
    behaviour_sync: SyncReport
    split: SplitSettings = SplitSettings()  # the tie rule the histories were ordered by
    # "time": histories are time-ordered; "none": order-free data (no timestamps), whose
    # transitions source is not used (its histories are only in item id order).
    history_order: str = "time"
    sequential_key: str | None = None  # the checkpoint behind the sequential collection
    sequential_dimension: int | None = None
    sequential_sync: SyncReport | None = None
    sequential_trained: bool = False  # this build trained the model (else: loaded the checkpoint)
    sequential_skipped: str | None = None  # why there is no sequential source
    fusion: FusionFit | None = None  # the fusion weights this build fitted (None: built before fits)
    # The live store as this build read it: events up to seq store_seq, items and erasures up
    # to the time store_until. A history is the built log's plus the stored events after it.
    store_seq: int = 0
    store_until: float = 0.0

    def key(self) -> IndexKey:
        return IndexKey(namespace=self.namespace, encoder=self.encoder, catalog_fingerprint=self.catalog_fingerprint,
                        interactions_fingerprint=self.interactions_fingerprint)


def read_transitions(path: Path, n_items: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """The transitions matrix and popularity of the transitions file (`IndexLayout.transitions`),
    verified (shapes, keys);
    a missing or damaged file is an IndexMismatchError naming it and the fix."""
    try:
        with np.load(path) as data:
            matrix = sp.csr_matrix(
                (data["transitions_data"], data["transitions_indices"], data["transitions_indptr"]),
                shape=(n_items, n_items),
            )
            pop = np.asarray(data["popularity"])
    except FileNotFoundError as exc:
        raise IndexMismatchError(f"{path} is missing; {REBUILD_HINT}") from exc
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, IndexError) as exc:
        raise IndexMismatchError(f"{path} is damaged ({type(exc).__name__}: {exc}); {REBUILD_HINT}") from exc
    if pop.shape != (n_items,):
        raise IndexMismatchError(f"{path} holds popularity for {pop.shape[0]} items, the manifest {n_items}; {REBUILD_HINT}")
    return matrix, pop


def read_index_manifest(index_dir: Path, strict: bool = True) -> IndexManifest | None:
    """The manifest of the version served from ``index_dir``, None when there is none; a
    damaged one raises (strict) or is ignored (a build then writes everything again)."""
    return read_version_manifest(IndexLayout(index_dir).live(), strict)


def read_version_manifest(version: VersionLayout, strict: bool = True) -> IndexManifest | None:
    """The manifest of one index version (see `read_index_manifest`)."""
    path = version.manifest
    if not path.is_file():
        return None
    try:
        return IndexManifest.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        if not strict:
            log.warning("%s is damaged; building the index again", path)
            return None
        raise IndexMismatchError(f"{path} is damaged ({type(exc).__name__}); {REBUILD_HINT}") from exc


def _rewrite_if_unreadable(coll: ItemVectorCollection) -> None:
    """Start a collection over when its vectors cannot be read back: its items then all count
    as changed and are written again by the sync that follows."""
    if not coll.vectors_readable():
        log.warning("the vectors of Chroma collection %r cannot be read back (a damaged segment file?); "
                    "writing them again", coll.name)
        coll.recreate()


class RetrievalIndex:
    """Opened index: Chroma collections plus the in-memory behaviour and sequential models."""

    def __init__(
        self,
        manifest: IndexManifest,
        text: ItemVectorCollection,
        behaviour: ItemVectorCollection,
        behaviour_model: BehaviourModel,
        transitions: TransitionModel,
        item_popularity: np.ndarray,
        encoder: TextEncoder,
        sequential: ItemVectorCollection | None = None,
        sequential_model: SequentialModel | None = None,
        version: VersionLayout | None = None,
    ):
        self.manifest = manifest
        self.version = version  # the files this index was opened from
        self.text = text
        self.behaviour = behaviour
        self.behaviour_model = behaviour_model
        self.transitions = transitions
        self.popularity = item_popularity
        self.encoder = encoder
        self.sequential = sequential
        self.sequential_model = sequential_model
        self.item_ids = manifest.item_ids
        self.position = {item_id: n for n, item_id in enumerate(self.item_ids)}
        self._store: LiveStore | None = None
        # (the collection's search it extends, the store's items mark, the search with the live items)
        self._live_text: tuple[ExactSearch, tuple[int, float], ExactSearch] | None = None
        self._live_vectors: dict[tuple[str, str], np.ndarray] = {}  # (item id, content hash) -> text vector

    def attach_store(self, store: LiveStore) -> None:
        """Catalog entries the live store took after this version was built join the text search,
        whichever worker took them (each worker encodes them itself: an embedded Chroma store does
        not show one process the vectors another wrote)."""
        self._store = store
        self._live_text = None

    def text_search(self) -> ExactSearch | None:
        """The text vectors as an exact search, with the live store's later entries in it; None
        when the collection is above ``chroma.exact_search_max_items`` (Chroma's HNSW is queried)."""
        base = self.text.exact_search()
        if base is None or self._store is None:
            return base
        mark = self._store.items_mark(self.manifest.store_until)
        if self._live_text is None or self._live_text[0] is not base or self._live_text[1] != mark:
            items = self._store.all_items(received_after=self.manifest.store_until)
            todo = [it for it in items if (it.item_id, content_hash(it)) not in self._live_vectors]
            if todo:
                for item, vector in zip(todo, self.encoder.encode([it.text() for it in todo])):
                    self._live_vectors[(item.item_id, content_hash(item))] = np.asarray(vector, dtype=np.float32)
            vectors = [self._live_vectors[(it.item_id, content_hash(it))] for it in items]
            search = base.with_rows([it.item_id for it in items], np.stack(vectors)) if items else base
            self._live_text = (base, mark, search)
        return self._live_text[2]

    def text_vectors(self, ids: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """The text vectors of those ``ids`` that exist, each once, as (ids, matrix)."""
        search = self.text_search()
        return search.vectors(ids) if search is not None else self.text.vectors(ids)

    def upsert_text(self, items: Sequence[Item]) -> None:
        """Encode and upsert items' text vectors (items added or changed after the build): the
        text source finds them at once; the trained sources learn them at the next build."""
        self.text.sync_some([it.item_id for it in items], [content_hash(it) for it in items],
                            [it.metadata() for it in items], self.encoder.encode([it.text() for it in items]))

    @staticmethod
    def _collection_name(settings: Settings, version: VersionLayout, namespace: str, kind: str) -> str:
        """On a Chroma server every version has its own collections; an embedded store is the version's own."""
        return collection_name(namespace, kind, version.name if settings.chroma.mode == "http" else "")

    @classmethod
    def _collections(cls, settings: Settings, version: VersionLayout, namespace: str, encoder: str, text_dim: int,
                     factors: int):
        client = chroma_client(settings.chroma, version.chroma)
        text = ItemVectorCollection(
            client,
            cls._collection_name(settings, version, namespace, "text"),
            "cosine",
            {"kind": "text", "encoder": encoder, "dimension": text_dim},
            settings.chroma.exact_search_max_items,
        )
        behaviour = ItemVectorCollection(
            client,
            cls._collection_name(settings, version, namespace, "behaviour"),
            "ip",
            {"kind": "behaviour", "encoder": "implicit-als", "dimension": factors},
            settings.chroma.exact_search_max_items,
        )
        return text, behaviour

    @classmethod
    def _sequential_collection(cls, settings: Settings, version: VersionLayout, namespace: str,
                               dimension: int) -> ItemVectorCollection:
        return ItemVectorCollection(
            chroma_client(settings.chroma, version.chroma),
            cls._collection_name(settings, version, namespace, "sequential"),
            "ip",
            {"kind": "sequential", "encoder": "sasrec", "dimension": dimension},
            settings.chroma.exact_search_max_items,
        )

    @classmethod
    def build(
        cls,
        items: Sequence[Item],
        histories: Mapping[str, Sequence[str]],
        settings: Settings,
        namespace: str,
        progress: ProgressFn | None = None,
        rebuild: bool = False,
        history_order: str = "time",
        retrain: bool = False,
        store_mark: tuple[int, float] = (0, 0.0),
    ) -> RetrievalIndex:
        """Create or update the index. ``store_mark``: the live store's (last event seq, time)
        that ``items`` and ``histories`` include (`promptrec.store`). Text vectors are upserted only for items whose text
        changed; behaviour vectors are refitted only when the interaction log changed. The
        sequential model is trained when no checkpoint exists (or `retrain`); a checkpoint
        for other data or hyperparameters is refused. `history_order="none"` (no timestamps)
        skips it: histories in item-id order are no sequence."""
        layout = settings.index_layout()
        ensure_dir(layout.root.parent, "folder of the index")
        layout.claim()  # refuses a folder holding files that are not promptrec's
        with file_lock(layout.build_lock, f"the index in {layout.root}"):
            served = layout.live()
            version = layout.new_version()
            try:
                cls._start_version(settings, served, version, namespace, everything=not rebuild)
                index = cls._build(items, histories, settings, namespace, progress, version, history_order, retrain,
                                   store_mark)
            except BaseException as exc:
                cls._delete_version(settings, version, namespace)
                kept = "the build deleted its partial version; the version served is unchanged"
                if isinstance(exc, DiskFullError):
                    raise DiskFullError(f"{exc} ({kept})") from exc
                if isinstance(exc, OSError) and is_disk_full(exc):
                    raise disk_full(layout.root, f"building a new index version ({kept})") from exc
                raise
            layout.switch_to(version)
            for stale in layout.stale_versions(keep=[version, served]):
                cls._delete_version(settings, stale, namespace)
            return index

    @classmethod
    def _start_version(cls, settings: Settings, served: VersionLayout, version: VersionLayout, namespace: str,
                       everything: bool) -> None:
        """Fill a new version from the served one: all of it (a build then updates only what
        changed), or with ``everything`` off only the sequential checkpoint (a rebuild writes
        every vector again, but keeps a trained model whose key still matches)."""
        copies = [(served.sequential_checkpoint, version.sequential_checkpoint)]
        if everything:
            copies += [(served.manifest, version.manifest), (served.transitions_to_read(), version.transitions)]
        for source, target in copies:
            if source.is_file():
                shutil.copy2(source, target)
        if not everything:
            return
        if settings.chroma.mode == "persistent":
            if served.chroma.is_dir():
                shutil.copytree(served.chroma, version.chroma, ignore=lambda folder, names: served.foreign_in_chroma()
                                if Path(folder) == served.chroma else [])
            return
        old = read_version_manifest(served, strict=False)
        client = chroma_client(settings.chroma, version.chroma)
        existing = {getattr(c, "name", c) for c in client.list_collections()}
        for kind, space in _SPACES.items():
            name = cls._collection_name(settings, served, old.namespace if old else namespace, kind)
            if name in existing:
                target = ItemVectorCollection(client, cls._collection_name(settings, version, namespace, kind), space, {})
                target.copy_from(ItemVectorCollection(client, name, space, {}))

    @classmethod
    def _delete_version(cls, settings: Settings, version: VersionLayout, namespace: str) -> None:
        """Delete a version's files (and, on a Chroma server, its collections). A version whose
        Chroma folder holds someone else's files is kept, with a warning."""
        foreign = version.foreign_in_chroma()
        if foreign:
            log.warning("keeping the old index version in %s: its Chroma folder holds files promptrec did not "
                        "write (%s)", version.root, ", ".join(foreign[:5]))
            return
        if settings.chroma.mode == "http":
            old = read_version_manifest(version, strict=False)
            client = chroma_client(settings.chroma, version.chroma)
            for kind in ("text", "behaviour", "sequential", _HOLDOUT):
                with contextlib.suppress(Exception):  # absent: never built, or already gone
                    client.delete_collection(
                        cls._collection_name(settings, version, old.namespace if old else namespace, kind))
        drop_persistent_store(version.chroma)
        if version.name:
            shutil.rmtree(version.root, ignore_errors=True)
        else:  # an unversioned index: its files lie beside the index folder's other contents
            for path in version.files:
                path.unlink(missing_ok=True)

    @classmethod
    def _build(
        cls,
        items: Sequence[Item],
        histories: Mapping[str, Sequence[str]],
        settings: Settings,
        namespace: str,
        progress: ProgressFn | None,
        version: VersionLayout,
        history_order: str = "time",
        retrain: bool = False,
        store_mark: tuple[int, float] = (0, 0.0),
    ) -> RetrievalIndex:
        started = time.perf_counter()
        previous = read_version_manifest(version, strict=False)
        encoder = TextEncoder(settings.encoder, settings)
        rs = settings.retrieval
        text, behaviour = cls._open_collections(settings, version, namespace, encoder.dimension)
        item_ids = [item.item_id for item in items]
        position = {item_id: n for n, item_id in enumerate(item_ids)}
        metadatas = [item.metadata() for item in items]
        texts = [item.text() for item in items]
        report = progress or (lambda stage, advance, total: None)

        catalog_fp = catalog_fingerprint(items)
        hashes = [content_hash(item) for item in items]
        vectors_for = lambda batch: encoder.encode([texts[n] for n in batch])  # noqa: E731
        if settings.ray.encode_text:  # the texts to encode, on the Ray cluster, before the sync writes them
            from promptrec.retrieval.ray_encoding import encode_on_ray

            stored = text.content_hashes()
            todo = [n for n, (i, h) in enumerate(zip(item_ids, hashes)) if stored.get(i) != h]
            encoded = encode_on_ray(settings, [texts[n] for n in todo], encoder.dimension,
                                    on_chunk=lambda n: report("text vectors (ray)", n, len(todo)))
            row = {n: k for k, n in enumerate(todo)}
            vectors_for = lambda batch: encoded[[row[n] for n in batch]]  # noqa: E731
        text_sync = text.sync(
            item_ids,
            hashes,
            metadatas,
            vectors_for,
            on_progress=lambda advance, total: report("text vectors", advance, total),
        )
        text.set_metadata(catalog_fingerprint=catalog_fp)

        unknown = {i for h in histories.values() for i in h if i not in position}
        if unknown:
            raise IndexMismatchError(
                f"{len(unknown)} interacted item id(s) are not in the catalog, e.g. {sorted(unknown)[:5]}"
            )
        inter_fp = interactions_fingerprint(histories)
        behaviour_sync = cls._sync_behaviour(settings, version, namespace, behaviour, histories, item_ids,
                                             metadatas, catalog_fp, inter_fp, report)
        sequential = cls._build_sequential(
            settings, version, namespace, histories, inter_fp, metadatas, position, report, history_order, retrain
        )
        manifest = IndexManifest(
            namespace=namespace,
            encoder=settings.encoder,
            text_dimension=encoder.dimension,
            behaviour_dimension=rs.als_factors,
            catalog_fingerprint=catalog_fp,
            interactions_fingerprint=inter_fp,
            item_ids=item_ids,
            n_users=len(histories),
            build_seconds=round(time.perf_counter() - started, 3),
            text_sync=text_sync,
            behaviour_sync=behaviour_sync,
            split=settings.split,
            history_order=history_order,
            store_seq=store_mark[0],
            store_until=store_mark[1],
            **sequential,
        )
        atomic_write_text(version.manifest, manifest.model_dump_json(indent=1))
        index = cls._load(manifest, settings, encoder, version)
        fusion = cls._fit_fusion(index, histories, settings, previous, report)
        index.manifest = manifest = manifest.model_copy(
            update={"fusion": fusion, "build_seconds": round(time.perf_counter() - started, 3)})
        atomic_write_text(version.manifest, manifest.model_dump_json(indent=1))
        return index

    @classmethod
    def _fit_fusion(cls, index: RetrievalIndex, histories: Mapping[str, Sequence[str]], settings: Settings,
                    previous: IndexManifest | None, report: ProgressFn) -> FusionFit:
        """Fit the fusion weights on each user's held-out last event (`promptrec.retrieval.weights`),
        or reuse the previous build's fit when nothing it depends on changed."""
        rs, manifest = settings.retrieval, index.manifest
        payload = {"retrieval": rs.model_dump(mode="json", exclude={"sequential"}),
                   "sequential_key": manifest.sequential_key, "encoder": manifest.encoder,
                   "catalog": manifest.catalog_fingerprint, "interactions": manifest.interactions_fingerprint,
                   "history_order": manifest.history_order}
        key = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
        if previous is not None and previous.fusion is not None and previous.fusion.fit_key == key:
            return previous.fusion
        if rs.weights_pinned:
            return FusionFit(fit_key=key, skipped="retrieval.weights are pinned (they differ from the defaults, or fit_weights is off)")
        if manifest.history_order != "time":
            return FusionFit(fit_key=key, skipped="the interactions carry no time order: there is no last event to hold out")
        log_without, targets = holdout_split(histories)
        if len(targets) < rs.fit_weights_min_users:
            return FusionFit(fit_key=key, skipped=f"{len(targets)} users have an event to hold out, fewer than "
                                                  f"retrieval.fit_weights_min_users = {rs.fit_weights_min_users}")
        started = time.perf_counter()
        users = sample_users(list(targets), rs.fit_weights_users, rs.seed)
        n_items = len(index.item_ids)
        positions = {u: [index.position[i] for i in h] for u, h in log_without.items()}
        report("fusion weights", 0, len(users))
        behaviour_model = BehaviourModel.fit(positions, n_items, rs)
        vectors = behaviour_model.item_factors.astype(np.float32)
        holdout = ItemVectorCollection(
            chroma_client(settings.chroma, index.version.chroma),
            cls._collection_name(settings, index.version, manifest.namespace, _HOLDOUT), "ip",
            {"kind": _HOLDOUT, "encoder": "implicit-als", "dimension": rs.als_factors},
            settings.chroma.exact_search_max_items,
        )
        try:
            if holdout.count():
                holdout.recreate()  # left by a build that stopped half-way
            holdout.sync(index.item_ids, ["holdout"] * n_items, [{}] * n_items, lambda batch: vectors[batch])
            held = cls(manifest, index.text, holdout, behaviour_model, TransitionModel.fit(positions, n_items, rs),
                       popularity(positions, n_items), index.encoder, index.sequential, index.sequential_model,
                       index.version)
            from promptrec.retrieval.retriever import Retriever  # it imports this module

            every = Retriever(held, {}, rs).with_every_source()
            rankings = all_source_rankings(every.source_rankings, log_without, users, rs.pool_size,
                                           on_user=lambda: report("fusion weights", 1, len(users)))
        finally:
            holdout.delete()
        best, current, top, tried = choose_weights(rankings, targets, rs)
        fit = FusionFit(fit_key=key, weights=best.weights, users=len(users), best=best, settings_weights=current,
                        top=top, settings_tried=tried, seconds=round(time.perf_counter() - started, 3))
        log.info("fusion weights fitted on %d held-out events: %s (NDCG@10 %.4f; retrieval.weights %.4f)",
                 len(users), best.weights, best.ndcg10, current.ndcg10)
        return fit

    def served_weights(self, rs: RetrievalSettings) -> dict[str, float]:
        """The fusion weights to serve: the ones this index fitted, unless the settings pin
        theirs (`RetrievalSettings.weights_pinned`) or the build fitted none."""
        fit = self.manifest.fusion
        if rs.weights_pinned or fit is None or fit.weights is None:
            return dict(rs.weights)
        return dict(fit.weights)

    @classmethod
    def _open_collections(cls, settings: Settings, version: VersionLayout, namespace: str,
                          text_dim: int) -> tuple[ItemVectorCollection, ItemVectorCollection]:
        """The new version's text and behaviour collections, checked (built with these settings,
        readable)."""
        rs = settings.retrieval
        text, behaviour = cls._collections(settings, version, namespace, settings.encoder, text_dim, rs.als_factors)
        for coll in (text, behaviour):
            coll.check_identity()
            _rewrite_if_unreadable(coll)
        return text, behaviour

    @classmethod
    def _sync_behaviour(cls, settings: Settings, version: VersionLayout, namespace: str,
                        behaviour: ItemVectorCollection, histories: Mapping[str, Sequence[str]], item_ids: list[str],
                        metadatas: Sequence[dict], catalog_fp: str, inter_fp: str, report: ProgressFn) -> SyncReport:
        """Refit the behaviour vectors, transitions and popularity when the log changed (or their
        files are missing or damaged); otherwise leave them."""
        rs = settings.retrieval
        old = read_version_manifest(version, strict=False)
        current = (
            old is not None
            and old.interactions_fingerprint == inter_fp
            and old.item_ids == item_ids
            and old.namespace == namespace
            and behaviour.count() == len(item_ids)
            and behaviour.metadata().get("interactions_fingerprint") == inter_fp
            and cls._sequential_ok(version.transitions, len(item_ids))
        )
        if current:
            return SyncReport(unchanged=len(item_ids))
        position = {item_id: n for n, item_id in enumerate(item_ids)}
        positions = {user: [position[i] for i in h] for user, h in histories.items()}
        report("behaviour model", 0, 2)
        model = BehaviourModel.fit(positions, len(item_ids), rs)
        report("behaviour model", 1, 2)
        # Every factor changes on a refit: the hash is the log's fingerprint per item.
        vectors = model.item_factors.astype(np.float32)
        sync = behaviour.sync(item_ids, [inter_fp] * len(item_ids), metadatas, lambda batch: vectors[batch])
        behaviour.set_metadata(interactions_fingerprint=inter_fp, catalog_fingerprint=catalog_fp)
        transitions = TransitionModel.fit(positions, len(item_ids), rs)
        pop = popularity(positions, len(item_ids))

        def write_transitions(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez_compressed(
                    fh,
                    transitions_data=transitions.transitions.data,
                    transitions_indices=transitions.transitions.indices,
                    transitions_indptr=transitions.transitions.indptr,
                    popularity=pop,
                )

        atomic_write(version.transitions, write_transitions)
        report("behaviour model", 1, 2)
        return sync

    @classmethod
    def _build_sequential(
        cls,
        settings: Settings,
        version: VersionLayout,
        namespace: str,
        histories: Mapping[str, Sequence[str]],
        inter_fp: str,
        metadatas: Sequence[dict],
        position: Mapping[str, int],
        report: ProgressFn,
        history_order: str,
        retrain: bool,
    ) -> dict:
        """Train or load the sequential model and sync its item vectors; the manifest fields."""
        seq = settings.retrieval.sequential
        if settings.retrieval.weights.get("sequential", 0.0) <= 0:
            return {"sequential_skipped": "retrieval.weights gives the sequential source no weight"}
        if history_order != "time":
            reason = ("the interactions carry no time order (timestamps missing or all equal); a history "
                      "in item-id order is no sequence, so the sequential model is skipped")
            log.warning("sequential retriever skipped: %s", reason)
            return {"sequential_skipped": reason}
        vocab = sorted({i for h in histories.values() for i in h})
        if len(vocab) < 2:
            return {"sequential_skipped": "fewer than two interacted items"}
        key = checkpoint_key(inter_fp, vocab, seq, settings.retrieval.seed)
        path = version.sequential_checkpoint
        model = None
        if not retrain and path.is_file():
            try:
                model = SequentialModel.load(path, key, settings.device)
            except DamagedCheckpointError as exc:  # a build rewrites what it cannot read
                log.warning("%s; training it again", exc)
        trained = model is None
        if trained:
            stage = "sequential model"
            report(stage, 0, seq.max_epochs)

            def on_epoch(e: EpochStats) -> None:
                ndcg = f", val NDCG@10 {e.val_ndcg10:.4f}" if e.val_ndcg10 is not None else ""
                report(f"{stage} | epoch {e.epoch}, loss {e.loss:.3f}{ndcg}", 1, seq.max_epochs)

            model = SequentialModel.fit(histories, seq, settings.retrieval.seed, inter_fp, settings.device, on_epoch)
            report(stage, seq.max_epochs - model.stats.epochs_run, seq.max_epochs)  # early stop: fill the bar
            model.save(path)
        coll = cls._sequential_collection(settings, version, namespace, seq.hidden)
        if trained and coll.count() and coll.metadata().get("dimension") != seq.hidden:
            coll.recreate()  # a retrain with another hidden size: the old vectors cannot be upserted over
        coll.check_identity()
        _rewrite_if_unreadable(coll)
        vectors = model.item_vectors()
        # The content hash of a vector is its bytes: only vectors that changed are upserted.
        sync = coll.sync(
            model.item_ids,
            [hashlib.sha256(v.tobytes()).hexdigest()[:16] for v in vectors],
            [metadatas[position[i]] for i in model.item_ids],
            lambda batch: vectors[batch],
        )
        coll.set_metadata(sequential_key=key.digest())
        return {"sequential_key": key.digest(), "sequential_dimension": seq.hidden, "sequential_sync": sync,
                "sequential_trained": trained}

    @staticmethod
    def _sequential_ok(path: Path, n_items: int) -> bool:
        try:
            read_transitions(path, n_items)
            return True
        except IndexMismatchError as exc:
            if path.exists():
                log.warning("%s; rewriting it", exc)
            return False

    @classmethod
    def open(
        cls,
        settings: Settings,
        namespace: str,
        items: Sequence[Item],
        histories: Mapping[str, Sequence[str]],
    ) -> RetrievalIndex:
        """Open an index built earlier, refusing one built for another catalog, log or encoder."""
        index_dir = settings.resolved_index_dir()
        version = settings.index_layout().live()
        manifest = read_version_manifest(version)
        if manifest is None:
            gone = f" (its served version {version.root.name} is gone)" if version.name else ""
            raise IndexMismatchError(f"no index in {index_dir}{gone}: build it with `promptrec index`")
        current = IndexKey(namespace=namespace, encoder=settings.encoder, catalog_fingerprint=catalog_fingerprint(items),
                           interactions_fingerprint=interactions_fingerprint(histories))
        what = manifest.key().describe_differences(current, "built")
        if what:
            raise IndexMismatchError(
                f"the index in {index_dir} does not match the current data and settings: {what}; "
                "run `promptrec index` to update it"
            )
        return cls._load(manifest, settings, TextEncoder(settings.encoder, settings), version)

    @classmethod
    def _load(cls, manifest: IndexManifest, settings: Settings, encoder: TextEncoder,
              version: VersionLayout) -> RetrievalIndex:
        rs = settings.retrieval
        text, behaviour = cls._collections(
            settings, version, manifest.namespace, manifest.encoder, manifest.text_dimension,
            manifest.behaviour_dimension
        )
        text.check_identity(allow_empty=False)
        behaviour.check_identity(allow_empty=False)
        for coll, key in ((text, "catalog_fingerprint"), (behaviour, "interactions_fingerprint")):
            stored = coll.metadata().get(key)
            if stored != getattr(manifest, key):
                raise IndexMismatchError(
                    f"Chroma collection {coll.name!r} holds vectors for {key} {stored!r}, "
                    f"the manifest says {getattr(manifest, key)!r}; run `promptrec index`"
                )
        sequential = sequential_model = None
        if manifest.sequential_key is not None:
            seq = settings.retrieval.sequential
            path = version.sequential_checkpoint
            sequential_model = SequentialModel.load(path, manifest.sequential_key, settings.device)
            current = checkpoint_key(manifest.interactions_fingerprint, sequential_model.item_ids, seq, rs.seed)
            if current.digest() != manifest.sequential_key:
                raise CheckpointMismatchError(
                    f"the sequential model in {path} was trained with other retrieval.sequential settings "
                    f"or seed than the current ones; retrain it with {RETRAIN}"
                )
            sequential = cls._sequential_collection(settings, version, manifest.namespace,
                                                    manifest.sequential_dimension or seq.hidden)
            sequential.check_identity(allow_empty=False)
            if sequential.metadata().get("sequential_key") != manifest.sequential_key:
                raise IndexMismatchError(
                    f"Chroma collection {sequential.name!r} holds vectors of another sequential model "
                    f"than the manifest's ({manifest.sequential_key}); run `promptrec index`"
                )
        ids, factors = behaviour.vectors()
        order = {item_id: n for n, item_id in enumerate(ids)}
        missing = [i for i in manifest.item_ids if i not in order]
        if missing:
            raise IndexMismatchError(
                f"Chroma collection {behaviour.name!r} lacks the vectors of {len(missing)} item(s), e.g. "
                f"{missing[:3]}; {REBUILD_HINT}"
            )
        factors = factors[[order[i] for i in manifest.item_ids]]
        matrix, pop = read_transitions(version.transitions_to_read(), len(manifest.item_ids))
        return cls(
            manifest,
            text,
            behaviour,
            BehaviourModel(factors, rs.als_regularization, rs.als_alpha),
            TransitionModel(matrix),
            pop,
            encoder,
            sequential,
            sequential_model,
            version,
        )

    # ------------------------------------------------------------------ item-to-item signals

    def item_popularity(self, item_id: str) -> int:
        """Interactions with the item in the indexed log (0 for an item outside it)."""
        position = self.position.get(item_id)
        return int(self.popularity[position]) if position is not None else 0
