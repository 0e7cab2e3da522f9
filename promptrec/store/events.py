"""The live store: events and catalog entries that arrive after an index was built, the users
erased since, and the open conversations (so that any worker goes on with any of them). One SQL schema on SQLAlchemy Core, so the embedded default (SQLite in WAL mode, a
file under the index folder; nothing to run) and PostgreSQL (a URL, for several workers or
hosts) are the same code. A write returns only after its transaction committed: an
acknowledged event survives a ``kill -9`` of the process that took it.

Every event gets a sequence number (``seq``) in arrival order. An index build records the
highest one it trained on (`IndexManifest.store_seq`), so a history is the built log's plus the
events after that mark, with nothing counted twice.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from promptrec.data.schema import Interaction, Item
from promptrec.errors import InputError, PromptrecError

if TYPE_CHECKING:  # pragma: no cover
    from promptrec.config import Settings

class StoreError(PromptrecError):
    """The live store cannot be opened or written (the message names its URL, password hidden)."""


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def live_store_url(settings: Settings, create: bool = False) -> str | None:
    """The settings' live store: `store.url`, else the SQLite file in the index folder (None when
    that was never written and ``create`` is false)."""
    if settings.store.url is not None:
        return settings.store.url
    path = settings.index_layout().live_store
    return sqlite_url(path) if create or path.is_file() else None


class LiveStore:
    """Events, catalog entries and erasures written through the API (see the module)."""

    def __init__(self, url: str):
        import sqlalchemy as sa
        from sqlalchemy.engine import make_url

        try:
            parsed = make_url(url)
        except Exception as exc:  # noqa: BLE001 - sqlalchemy's ArgumentError and friends
            raise StoreError(f"store.url {url!r} is not a database URL ({exc})") from None
        self.url = parsed.render_as_string(hide_password=True)
        self.dialect = parsed.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise StoreError(f"store.url {self.url}: only sqlite:/// and postgresql+psycopg:// are supported")
        if self.dialect == "sqlite":
            if parsed.database:
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            self.engine = sa.create_engine(parsed, connect_args={"timeout": 30, "check_same_thread": False})
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
            sa.event.listen(self.engine, "begin", _sqlite_begin)
        else:
            self.engine = sa.create_engine(parsed, pool_pre_ping=True, pool_size=4, max_overflow=4)
        meta = sa.MetaData()
        self.events = sa.Table(
            "events", meta,
            sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
            sa.Column("user_id", sa.String, nullable=False, index=True),
            sa.Column("item_id", sa.String, nullable=False),
            sa.Column("timestamp", sa.Float),
            sa.Column("rating", sa.Float),
            sa.Column("behaviour", sa.String),
            sa.Column("received", sa.Float, nullable=False),
            sqlite_autoincrement=True,  # a deleted (erased) event's seq is never given again
        )
        self.items = sa.Table(
            "items", meta,
            sa.Column("item_id", sa.String, primary_key=True),
            sa.Column("record", sa.Text, nullable=False),  # the Item as JSON
            sa.Column("received", sa.Float, nullable=False),
        )
        self.erased = sa.Table(
            "erased_users", meta,
            sa.Column("user_id", sa.String, primary_key=True),
            sa.Column("erased", sa.Float, nullable=False),
            sa.Column("events_deleted", sa.Integer, nullable=False),
        )
        self.conversations = sa.Table(
            "conversations", meta,
            sa.Column("conversation_id", sa.String, primary_key=True),
            sa.Column("user_id", sa.String, nullable=False, index=True),
            sa.Column("state", sa.Text),  # the conversation's state as JSON; NULL once closed
            sa.Column("last_used", sa.Float, nullable=False),
            sa.Column("busy_until", sa.Float, nullable=False),  # a worker is answering until then
            sa.Column("closed", sa.String),  # why it closed; NULL while open
        )
        try:
            # One write transaction from the start (BEGIN IMMEDIATE on SQLite): workers starting
            # together wait for each other instead of failing "database is locked" when the
            # check for the tables (a read) turns into their creation (a write).
            with self.engine.connect().execution_options(sqlite_immediate=True) as conn, conn.begin():
                meta.create_all(conn)
        except Exception as exc:  # noqa: BLE001 - a driver error: say which store
            raise StoreError(f"cannot open the live store {self.url}: {type(exc).__name__}: {exc}") from None
        self._sa = sa

    # ------------------------------------------------------------------ writes
    def add_events(self, events: Sequence[Interaction]) -> tuple[int, int]:
        """Append the events in one transaction; returns (first seq, last seq) of the batch."""
        if not events:
            return (0, 0)
        now = time.time()
        rows = [{"user_id": e.user_id, "item_id": e.item_id, "timestamp": e.timestamp, "rating": e.rating,
                 "behaviour": e.behaviour, "received": now} for e in events]
        with self._writing() as conn:
            seqs = conn.execute(self.events.insert().returning(self.events.c.seq), rows).scalars().all()
        return int(min(seqs)), int(max(seqs))

    def put_items(self, items: Sequence[Item]) -> None:
        """Insert or replace catalog entries in one transaction."""
        now = time.time()
        with self._writing() as conn:
            ids = [it.item_id for it in items]
            conn.execute(self.items.delete().where(self.items.c.item_id.in_(ids)))
            conn.execute(self.items.insert(), [{"item_id": it.item_id, "record": it.model_dump_json(),
                                                "received": now} for it in items])

    def erase_user(self, user_id: str) -> int:
        """Delete the user's events and record the erasure (their built history is hidden from
        now on, and left out of the next build); returns the number of events deleted."""
        sa = self._sa
        with self._writing() as conn:
            deleted = conn.execute(self.events.delete().where(self.events.c.user_id == user_id)).rowcount or 0
            conn.execute(self.erased.delete().where(self.erased.c.user_id == user_id))
            conn.execute(self.erased.insert(), [{"user_id": user_id, "erased": time.time(),
                                                 "events_deleted": int(deleted)}])
            self._close_conversations(conn, self.conversations.c.user_id == user_id, "the user was erased")
        return int(deleted)

    # ------------------------------------------------------------------ conversations
    def open_conversation(self, conversation_id: str, user_id: str, state: str, *, max_per_user: int,
                          max_open: int, ttl_s: float) -> None:
        """Store a new conversation's state. In the same transaction, conversations idle for more
        than ``ttl_s`` close, then the user's least recently used ones past ``max_per_user`` and
        everyone's past ``max_open``; closed ones keep only why they closed."""
        sa, c = self._sa, self.conversations.c
        now = time.time()
        with self._writing() as conn:
            self._close_conversations(conn, (c.closed.is_(None)) & (c.last_used < now - ttl_s),
                                      f"idle for more than {ttl_s:g} s")
            conn.execute(self.conversations.delete().where(c.closed.is_not(None), c.last_used < now - 10 * ttl_s))
            for where, limit, why in (
                (c.user_id == user_id, max_per_user,
                 f"the user's newer conversations replaced it (at most {max_per_user} per user)"),
                (sa.true(), max_open, f"the server was full ({max_open} conversations)"),
            ):
                open_ids = conn.execute(sa.select(c.conversation_id).where(where, c.closed.is_(None))
                                        .order_by(c.last_used)).scalars().all()
                surplus = open_ids[: max(0, len(open_ids) - limit + 1)]
                if surplus:
                    self._close_conversations(conn, c.conversation_id.in_(surplus), why)
            conn.execute(self.conversations.insert(), [{
                "conversation_id": conversation_id, "user_id": user_id, "state": state,
                "last_used": now, "busy_until": 0.0, "closed": None}])

    def conversation(self, conversation_id: str, user_id: str) -> tuple[str | None, str | None]:
        """(state, None) for an open conversation of this user, (None, why it closed) for a closed
        one, (None, None) when there is none for this user."""
        c = self.conversations.c
        with self.engine.connect() as conn:
            row = conn.execute(self._sa.select(c.state, c.closed).where(
                c.conversation_id == conversation_id, c.user_id == user_id)).first()
        return (None, None) if row is None else (row.state, row.closed)

    def claim_conversation(self, conversation_id: str, user_id: str, lease_s: float) -> str | None:
        """Mark an open conversation busy for at most ``lease_s`` and return its latest state;
        None if it is busy (another worker answers in it) or no longer open."""
        c = self.conversations.c
        now = time.time()
        with self._writing() as conn:
            claimed = conn.execute(self.conversations.update().where(
                c.conversation_id == conversation_id, c.user_id == user_id, c.closed.is_(None),
                c.busy_until < now).values(busy_until=now + lease_s)).rowcount
            if not claimed:
                return None
            return conn.execute(self._sa.select(c.state).where(c.conversation_id == conversation_id)).scalar_one()

    def release_conversation(self, conversation_id: str, state: str) -> bool:
        """Store the state an answer left and end the claim; False if the conversation closed
        meanwhile (its state is then not written back)."""
        c = self.conversations.c
        with self._writing() as conn:
            return bool(conn.execute(self.conversations.update().where(
                c.conversation_id == conversation_id, c.closed.is_(None)).values(
                state=state, busy_until=0.0, last_used=time.time())).rowcount)

    def close_conversation(self, conversation_id: str, why: str) -> None:
        with self._writing() as conn:
            self._close_conversations(conn, self.conversations.c.conversation_id == conversation_id, why)

    def close_user_conversations(self, user_id: str, why: str) -> int:
        """Close a user's open conversations; returns how many there were."""
        with self._writing() as conn:
            return self._close_conversations(conn, self.conversations.c.user_id == user_id, why)

    def count_conversations(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(self._sa.select(self._sa.func.count()).select_from(self.conversations)
                                    .where(self.conversations.c.closed.is_(None))).scalar_one())

    def _close_conversations(self, conn: Any, where: Any, why: str) -> int:
        c = self.conversations.c
        return int(conn.execute(self.conversations.update().where(where, c.closed.is_(None))
                                .values(state=None, closed=why)).rowcount or 0)

    # ------------------------------------------------------------------ reads
    def user_events(self, user_id: str, after_seq: int = 0) -> list[dict[str, Any]]:
        """The user's events after ``after_seq``, in history order: by timestamp (an event
        without one counts as received then), ties by arrival."""
        t = self.events.c
        with self.engine.connect() as conn:
            rows = conn.execute(self._sa.select(t.seq, t.item_id, t.timestamp, t.rating, t.received)
                                .where(t.user_id == user_id, t.seq > after_seq)).mappings().all()
        return sorted((dict(r) for r in rows), key=lambda r: (r["timestamp"] if r["timestamp"] is not None
                                                               else r["received"], r["seq"]))

    def is_erased(self, user_id: str) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(self._sa.select(self.erased.c.user_id)
                                .where(self.erased.c.user_id == user_id)).first() is not None

    def erased_users(self, until: float | None = None) -> set[str]:
        query = self._sa.select(self.erased.c.user_id)
        if until is not None:
            query = query.where(self.erased.c.erased <= until)
        with self.engine.connect() as conn:
            return set(conn.execute(query).scalars())

    def item(self, item_id: str) -> Item | None:
        with self.engine.connect() as conn:
            record = conn.execute(self._sa.select(self.items.c.record)
                                  .where(self.items.c.item_id == item_id)).scalar_one_or_none()
        return Item.model_validate_json(record) if record is not None else None

    def all_items(self, received_until: float | None = None, received_after: float | None = None) -> list[Item]:
        """The stored catalog entries (received in that window), by item id."""
        query = self._sa.select(self.items.c.record).order_by(self.items.c.item_id)
        if received_until is not None:
            query = query.where(self.items.c.received <= received_until)
        if received_after is not None:
            query = query.where(self.items.c.received > received_after)
        with self.engine.connect() as conn:
            return [Item.model_validate_json(r) for r in conn.execute(query).scalars()]

    def items_mark(self, received_after: float) -> tuple[int, float]:
        """(how many, the latest time) of the entries received after ``received_after``: a cheap
        check of whether that set changed."""
        sa, t = self._sa, self.items.c
        query = sa.select(sa.func.count(), sa.func.coalesce(sa.func.max(t.received), 0.0)).where(t.received > received_after)
        with self.engine.connect() as conn:
            count, latest = conn.execute(query).one()
        return int(count), float(latest)

    def snapshot_mark(self) -> tuple[int, float]:
        """(the last committed event's seq, now): what a build starting now includes (events up to
        that seq, items and erasures up to that time). On PostgreSQL the events table is locked in share mode for the read, so no
        write still in flight can commit a lower seq afterwards."""
        sa = self._sa
        with self.engine.connect() as conn, conn.begin():
            if self.dialect == "postgresql":
                conn.exec_driver_sql("LOCK TABLE events IN SHARE MODE")
            seq = conn.execute(sa.select(sa.func.coalesce(sa.func.max(self.events.c.seq), 0))).scalar_one()
            now = time.time()
        return int(seq), now

    def all_events(self, upto_seq: int | None = None) -> list[Interaction]:
        """Every stored event (up to ``upto_seq``), in arrival order: what a build trains on."""
        t = self.events.c
        query = self._sa.select(t.user_id, t.item_id, t.rating, t.timestamp, t.behaviour, t.received).order_by(t.seq)
        if upto_seq is not None:
            query = query.where(t.seq <= upto_seq)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [Interaction(user_id=r["user_id"], item_id=r["item_id"], rating=r["rating"],
                            timestamp=r["timestamp"] if r["timestamp"] is not None else r["received"],
                            behaviour=r["behaviour"]) for r in rows]

    def changed_since(self, seq: int, until: float) -> bool:
        """Whether an event after ``seq``, or an item or an erasure after the time ``until``, is
        stored: what a build that read the store up to (seq, until) has not seen."""
        sa = self._sa
        queries = (sa.select(self.events.c.seq).where(self.events.c.seq > seq).limit(1),
                   sa.select(self.items.c.item_id).where(self.items.c.received > until).limit(1),
                   sa.select(self.erased.c.user_id).where(self.erased.c.erased > until).limit(1))
        with self.engine.connect() as conn:
            return any(conn.execute(q).first() is not None for q in queries)

    def last_seq(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(self._sa.select(self._sa.func.coalesce(
                self._sa.func.max(self.events.c.seq), 0))).scalar_one())

    def count_events(self) -> int:
        return self._count(self.events)

    def _count(self, table: Any) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(self._sa.select(self._sa.func.count()).select_from(table)).scalar_one())

    def users(self) -> set[str]:
        """Users with stored events."""
        with self.engine.connect() as conn:
            return set(conn.execute(self._sa.select(self.events.c.user_id).distinct()).scalars())

    def describe(self) -> dict[str, Any]:
        return {"url": self.url, "events": self.count_events(), "last_seq": self.last_seq(),
                "items": self._count(self.items), "erased_users": self._count(self.erased),
                "open_conversations": self.count_conversations()}

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------ helpers
    def _writing(self):
        """A transaction that commits on leaving (or rolls back on an error); on SQLite an
        immediate one (the write lock is taken at its start, so two workers' writes queue)."""
        import contextlib

        @contextlib.contextmanager
        def tx():
            try:
                with self.engine.connect().execution_options(sqlite_immediate=True) as conn, conn.begin():
                    yield conn
            except self._sa.exc.DBAPIError as exc:
                raise StoreError(f"the live store {self.url} refused a write: {exc.orig}") from None

        return tx()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL: readers never block the writer; synchronous=FULL: a commit is on disk before it returns.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
    dbapi_connection.isolation_level = None  # the driver's own BEGIN off: `_sqlite_begin` emits it


def _sqlite_begin(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("sqlite_immediate") else "BEGIN")


class LiveCatalog(dict):
    """The catalog as a mapping that also finds items added through the store after the build
    (by another worker, too): a missing id is looked up in the store once and kept."""

    def __init__(self, items: dict[str, Item], store: LiveStore):
        super().__init__(items)
        self.store = store

    def __missing__(self, item_id: str) -> Item:
        item = self.store.item(item_id)
        if item is None:
            raise KeyError(item_id)
        self[item_id] = item
        return item

    def __contains__(self, item_id: object) -> bool:
        if dict.__contains__(self, item_id):
            return True
        try:
            self[item_id]  # type: ignore[index]
        except KeyError:
            return False
        return True


def merged_log(items: Sequence[Item], interactions: Any, store: LiveStore,
               mark: tuple[int, float] | None = None) -> tuple[list[Item], Any, tuple[int, float]]:
    """The data a build trains on: the catalog with the stored items, the log with the stored
    events, the events of erased users left out, as of ``mark`` (last event seq, time; None:
    now). Returns (items, interactions frame, the mark used)."""
    import pandas as pd

    from promptrec.data.schema import interactions_frame

    if mark is None:
        mark = store.snapshot_mark()
    seq, until = mark
    stored = {it.item_id: it for it in store.all_items(received_until=until)}
    merged = [stored.pop(it.item_id, it) for it in items] + sorted(stored.values(), key=lambda it: it.item_id)
    frame = interactions_frame(interactions)
    live = store.all_events(upto_seq=seq)
    if live:
        frame = pd.concat([frame, interactions_frame(live)], ignore_index=True)
    erased = store.erased_users(until)
    if erased:
        frame = frame[~frame["user_id"].astype(str).isin(erased)].reset_index(drop=True)
    return merged, frame, mark


class IngestReceipt(BaseModel):
    """What a write to the live store accepted: every row, durably (or none: it raised)."""

    accepted: int
    first_seq: int | None = None  # events: the sequence numbers the batch got
    last_seq: int | None = None


class ErasureReceipt(BaseModel):
    user_id: str
    events_deleted: int
    note: str


def checked_row(model: type[BaseModel], row: Any, position: int, what: str) -> Any:
    """``row`` as ``model`` (already one, or a mapping); a bad row is an InputError naming its
    position and fields, e.g. 'event 3: item_id: Field required'."""
    from pydantic import ValidationError

    if isinstance(row, model):
        return row
    if not isinstance(row, Mapping):
        raise InputError(f"{what} {position}: expected an object with the fields of {model.__name__}, "
                         f"got {type(row).__name__}; nothing was written")
    try:
        return model.model_validate(dict(row))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(row)'}: {e['msg']}" for e in exc.errors())
        raise InputError(f"{what} {position}: {problems}; nothing was written") from None
