"""The bot's memory: users' settings, conversations, jobs and delivered results, in SQLite.

Why SQLite: one file in the data directory, nothing to run, and transactions
make "a restart loses nothing and delivers nothing twice" cheap: a job row is
written before the user is told it is queued, and its delivery is recorded in
the same row with a conditional update, so only one delivery can ever win.

Inputs are kept as Telegram file ids, not bytes: Telegram keeps them valid, so
a restart can fetch them again and the database stays small.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite

ACTIVE = ("queued", "running")
FINISHED = ("done", "failed", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    user_id     INTEGER PRIMARY KEY,
    settings    TEXT NOT NULL DEFAULT '{}',
    updated_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS drafts (
    chat_id             INTEGER NOT NULL,
    user_id             INTEGER NOT NULL,
    content_file_id     TEXT NOT NULL,
    content_message_id  INTEGER,
    token               TEXT NOT NULL,
    awaiting_style      INTEGER NOT NULL DEFAULT 1,
    updated_at          REAL NOT NULL,
    PRIMARY KEY (chat_id, user_id)
);
CREATE TABLE IF NOT EXISTS jobs (
    id                  TEXT PRIMARY KEY,
    user_id             INTEGER NOT NULL,
    chat_id             INTEGER NOT NULL,
    chat_type           TEXT NOT NULL DEFAULT 'private',
    user_name           TEXT NOT NULL DEFAULT '',
    content_file_id     TEXT NOT NULL,
    content_message_id  INTEGER,
    style_preset        TEXT,
    style_file_id       TEXT,
    settings            TEXT NOT NULL,
    status              TEXT NOT NULL,
    status_message_id   INTEGER,
    created_at          REAL NOT NULL,
    started_at          REAL,
    finished_at         REAL,
    seconds             REAL,
    error               TEXT,
    result_path         TEXT,
    result_file_id      TEXT,
    result_message_id   INTEGER,
    document_file_id    TEXT,
    delivered_at        REAL
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, created_at);
CREATE INDEX IF NOT EXISTS jobs_user ON jobs (user_id, status);
-- typical_seconds() reads the latest finished jobs on every request.
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (status, finished_at);
CREATE TABLE IF NOT EXISTS results (
    job_id      TEXT PRIMARY KEY REFERENCES jobs (id),
    user_id     INTEGER NOT NULL,
    file_id     TEXT NOT NULL,
    caption     TEXT NOT NULL DEFAULT '',
    created_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS results_user ON results (user_id, created_at);
-- Cancels asked for that the painter has not confirmed yet ("Cancelling…"): kept here, so that
-- a crash in between doesn't turn a cancelled picture into one painted again at the next start.
CREATE TABLE IF NOT EXISTS cancel_requests (
    job_id        TEXT PRIMARY KEY REFERENCES jobs (id),
    requested_at  REAL NOT NULL
);
-- Groups upgraded to supergroups: the old id's buttons and allow-list entry still mean the group.
CREATE TABLE IF NOT EXISTS moved_chats (
    old_chat_id INTEGER PRIMARY KEY,
    new_chat_id INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS preset_files (
    slug     TEXT PRIMARY KEY,
    file_id  TEXT NOT NULL
);
"""


@dataclass
class JobRow:
    """One request to paint a photo, from the moment it is accepted until it is delivered."""

    id: str
    user_id: int
    chat_id: int
    content_file_id: str
    settings: dict[str, Any]
    status: str = "queued"
    chat_type: str = "private"
    user_name: str = ""
    content_message_id: int | None = None
    style_preset: str | None = None
    style_file_id: str | None = None
    status_message_id: int | None = None
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    seconds: float | None = None
    error: str | None = None
    result_path: str | None = None
    result_file_id: str | None = None
    result_message_id: int | None = None
    document_file_id: str | None = None
    delivered_at: float | None = None

    @classmethod
    def from_row(cls, row: aiosqlite.Row) -> JobRow:
        data = dict(row)
        data["settings"] = json.loads(data["settings"])
        return cls(**data)

    def to_row(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["settings"] = json.dumps(self.settings)
        return data


@dataclass
class Draft:
    """A user's photo waiting for a style, per (chat, user) so group members never mix."""

    chat_id: int
    user_id: int
    content_file_id: str
    content_message_id: int | None
    token: str
    awaiting_style: bool = True
    updated_at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Result:
    job_id: str
    user_id: int
    file_id: str
    caption: str
    created_at: float


@dataclass(frozen=True)
class Stats:
    queued: int
    running: int
    done_today: int
    failed_today: int
    avg_seconds: float | None


_JOB_COLUMNS = tuple(f.name for f in dataclasses.fields(JobRow))


class Database:
    """Async access to the bot's SQLite file; one connection, serialised by aiosqlite's thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: aiosqlite.Connection | None = None

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = await aiosqlite.connect(self.path)
        self._conn.row_factory = aiosqlite.Row
        await self._conn.execute("PRAGMA journal_mode=WAL")
        await self._conn.execute("PRAGMA synchronous=NORMAL")
        await self._conn.executescript(_SCHEMA)
        await self._conn.commit()

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    @property
    def conn(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise RuntimeError("database is not open")
        return self._conn

    async def _write(self, sql: str, params: Iterable[Any] = ()) -> int:
        cur = await self.conn.execute(sql, tuple(params))
        await self.conn.commit()
        return cur.rowcount

    async def _all(self, sql: str, params: Iterable[Any] = ()) -> list[aiosqlite.Row]:
        async with self.conn.execute(sql, tuple(params)) as cur:
            return list(await cur.fetchall())

    async def _one(self, sql: str, params: Iterable[Any] | dict[str, Any] = ()) -> aiosqlite.Row | None:
        args = params if isinstance(params, dict) else tuple(params)
        async with self.conn.execute(sql, args) as cur:
            return await cur.fetchone()

    # --- settings -----------------------------------------------------------------------
    async def get_settings(self, user_id: int) -> dict[str, Any]:
        row = await self._one("SELECT settings FROM users WHERE user_id = ?", (user_id,))
        return json.loads(row["settings"]) if row else {}

    async def set_settings(self, user_id: int, settings: dict[str, Any]) -> None:
        await self._write(
            "INSERT INTO users (user_id, settings, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (user_id) DO UPDATE SET settings = excluded.settings, updated_at = excluded.updated_at",
            (user_id, json.dumps(settings), time.time()),
        )

    # --- drafts -------------------------------------------------------------------------
    async def get_draft(self, chat_id: int, user_id: int) -> Draft | None:
        row = await self._one("SELECT * FROM drafts WHERE chat_id = ? AND user_id = ?", (chat_id, user_id))
        if row is None:
            return None
        data = dict(row)
        data["awaiting_style"] = bool(data["awaiting_style"])
        return Draft(**data)

    async def delete_draft(self, chat_id: int, user_id: int) -> None:
        await self._write("DELETE FROM drafts WHERE chat_id = ? AND user_id = ?", (chat_id, user_id))

    async def save_draft(self, draft: Draft) -> None:
        await self._write(
            "INSERT OR REPLACE INTO drafts (chat_id, user_id, content_file_id, content_message_id, token, "
            "awaiting_style, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                draft.chat_id,
                draft.user_id,
                draft.content_file_id,
                draft.content_message_id,
                draft.token,
                int(draft.awaiting_style),
                draft.updated_at,
            ),
        )

    # --- jobs ---------------------------------------------------------------------------
    async def insert_job(self, job: JobRow) -> None:
        row = job.to_row()
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        await self._write(f"INSERT INTO jobs ({cols}) VALUES ({marks})", row.values())

    async def get_job(self, job_id: str) -> JobRow | None:
        row = await self._one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return JobRow.from_row(row) if row else None

    async def update_job(self, job_id: str, *, only_if_status: Iterable[str] | None = None, **changes: Any) -> bool:
        """Change some columns; with ``only_if_status`` only from one of those states.  True if a row changed."""
        unknown = set(changes) - set(_JOB_COLUMNS)
        if unknown:
            raise ValueError(f"unknown job column(s): {sorted(unknown)}")
        if "settings" in changes:
            changes["settings"] = json.dumps(changes["settings"])
        sets = ", ".join(f"{k} = ?" for k in changes)
        sql = f"UPDATE jobs SET {sets} WHERE id = ?"
        params: list[Any] = [*changes.values(), job_id]
        if only_if_status is not None:
            states = tuple(only_if_status)
            sql += f" AND status IN ({', '.join('?' for _ in states)})"
            params.extend(states)
        return await self._write(sql, params) > 0

    async def request_cancel(self, job_id: str) -> None:
        await self._write(
            "INSERT OR IGNORE INTO cancel_requests (job_id, requested_at) VALUES (?, ?)", (job_id, time.time())
        )

    async def forget_cancel(self, job_id: str) -> None:
        await self._write("DELETE FROM cancel_requests WHERE job_id = ?", (job_id,))

    async def pending_cancels(self) -> list[str]:
        """Unfinished jobs whose cancel was asked for (the others' requests are dropped)."""
        await self._write(
            "DELETE FROM cancel_requests WHERE job_id NOT IN "
            "(SELECT id FROM jobs WHERE status IN ('queued', 'running'))"
        )
        return [row["job_id"] for row in await self._all("SELECT job_id FROM cancel_requests")]

    async def move_chat(self, old_chat_id: int, new_chat_id: int) -> list[str]:
        """A group became a supergroup: its unfinished jobs go on under the new id; their ids.

        The old chat's message ids mean nothing in the new one (a reply there
        could land on an unrelated message), so they are forgotten.  Drafts are
        dropped: their pickers sit in the old chat, which no longer takes edits.
        """
        where = "chat_id = ? AND (status IN ('queued', 'running') OR (status = 'done' AND delivered_at IS NULL))"
        ids = [r["id"] for r in await self._all(f"SELECT id FROM jobs WHERE {where}", (old_chat_id,))]
        await self._write(
            "UPDATE jobs SET chat_id = ?, chat_type = 'supergroup', content_message_id = NULL, "
            f"status_message_id = NULL WHERE {where}",
            (new_chat_id, old_chat_id),
        )
        await self._write("DELETE FROM drafts WHERE chat_id = ?", (old_chat_id,))
        # Its anonymous admins post as the group (see bot.handlers.author): they move with it.
        await self._write("UPDATE jobs SET user_id = ? WHERE user_id = ?", (new_chat_id, old_chat_id))
        await self._write("UPDATE results SET user_id = ? WHERE user_id = ?", (new_chat_id, old_chat_id))
        await self._write("UPDATE OR IGNORE users SET user_id = ? WHERE user_id = ?", (new_chat_id, old_chat_id))
        await self._write("INSERT OR REPLACE INTO moved_chats VALUES (?, ?)", (old_chat_id, new_chat_id))
        return ids

    async def moved_chats(self) -> dict[int, int]:
        """Old chat id -> new, for every group upgraded to a supergroup while the bot was in it."""
        rows = await self._all("SELECT old_chat_id, new_chat_id FROM moved_chats")
        return {r["old_chat_id"]: r["new_chat_id"] for r in rows}

    async def jobs_with_status(self, statuses: Iterable[str]) -> list[JobRow]:
        states = tuple(statuses)
        rows = await self._all(
            f"SELECT * FROM jobs WHERE status IN ({', '.join('?' for _ in states)}) ORDER BY created_at, rowid",
            states,
        )
        return [JobRow.from_row(r) for r in rows]

    async def undelivered_done(self) -> list[JobRow]:
        rows = await self._all(
            "SELECT * FROM jobs WHERE status = 'done' AND delivered_at IS NULL ORDER BY created_at, rowid"
        )
        return [JobRow.from_row(r) for r in rows]

    async def active_jobs(self, user_id: int, chat_id: int | None = None) -> list[JobRow]:
        sql = "SELECT * FROM jobs WHERE user_id = ? AND status IN ('queued', 'running')"
        params: list[Any] = [user_id]
        if chat_id is not None:
            sql += " AND chat_id = ?"
            params.append(chat_id)
        rows = await self._all(sql + " ORDER BY created_at, rowid", params)
        return [JobRow.from_row(r) for r in rows]

    async def count_active(self, *statuses: str) -> int:
        """Jobs queued or running (or only in ``statuses``), for everybody."""
        states = statuses or ACTIVE
        row = await self._one(
            f"SELECT COUNT(*) AS n FROM jobs WHERE status IN ({', '.join('?' for _ in states)})", states
        )
        return int(row["n"]) if row else 0

    async def mark_delivered(self, job_id: str, *, file_id: str, message_id: int, caption: str, user_id: int) -> bool:
        """Record the delivery once; False if another delivery already won (nothing is written then)."""
        now = time.time()
        cur = await self.conn.execute(
            "UPDATE jobs SET delivered_at = ?, result_file_id = ?, result_message_id = ? "
            "WHERE id = ? AND delivered_at IS NULL",
            (now, file_id, message_id, job_id),
        )
        if cur.rowcount == 0:
            await self.conn.commit()
            return False
        await self.conn.execute(
            "INSERT OR REPLACE INTO results (job_id, user_id, file_id, caption, created_at) VALUES (?, ?, ?, ?, ?)",
            (job_id, user_id, file_id, caption, now),
        )
        await self.conn.commit()
        return True

    async def delivered_of(self, user_id: int, chat_id: int, content_file_id: str) -> list[JobRow]:
        """The user's delivered pictures of one photo in one chat, newest first."""
        rows = await self._all(
            "SELECT * FROM jobs WHERE user_id = ? AND chat_id = ? AND content_file_id = ? AND status = 'done' "
            "AND delivered_at IS NOT NULL ORDER BY created_at DESC, rowid DESC",
            (user_id, chat_id, content_file_id),
        )
        return [JobRow.from_row(r) for r in rows]

    async def recent_results(self, user_id: int, limit: int = 20) -> list[Result]:
        rows = await self._all(
            "SELECT * FROM results WHERE user_id = ? ORDER BY created_at DESC, rowid DESC LIMIT ?", (user_id, limit)
        )
        return [Result(**dict(r)) for r in rows]

    async def typical_seconds(self, last: int = 20) -> float | None:
        """Median time of the last few finished jobs, for ETAs and the busy message."""
        rows = await self._all(
            "SELECT seconds FROM jobs WHERE status = 'done' AND seconds IS NOT NULL ORDER BY finished_at DESC LIMIT ?",
            (last,),
        )
        values = sorted(float(r["seconds"]) for r in rows)
        return values[len(values) // 2] if values else None

    async def stats(self, since: float) -> Stats:
        row = await self._one(
            "SELECT "
            " SUM(status = 'queued') AS queued, SUM(status = 'running') AS running,"
            " SUM(status = 'done' AND finished_at >= :since) AS done_today,"
            " SUM(status = 'failed' AND finished_at >= :since) AS failed_today,"
            " AVG(CASE WHEN status = 'done' AND finished_at >= :since THEN seconds END) AS avg_seconds "
            "FROM jobs",
            {"since": since},
        )
        assert row is not None
        return Stats(
            queued=int(row["queued"] or 0),
            running=int(row["running"] or 0),
            done_today=int(row["done_today"] or 0),
            failed_today=int(row["failed_today"] or 0),
            avg_seconds=float(row["avg_seconds"]) if row["avg_seconds"] is not None else None,
        )

    # --- preset file ids (so /styles uploads each painting once) ----------------------------
    async def preset_file_ids(self) -> dict[str, str]:
        return {r["slug"]: r["file_id"] for r in await self._all("SELECT slug, file_id FROM preset_files")}

    async def set_preset_file_id(self, slug: str, file_id: str) -> None:
        await self._write("INSERT OR REPLACE INTO preset_files (slug, file_id) VALUES (?, ?)", (slug, file_id))
