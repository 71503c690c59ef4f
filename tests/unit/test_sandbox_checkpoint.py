"""The sandbox store's write-ahead log is checkpointed beside the store, never inside a
request's COMMIT under the store's lock (sandbox/checkpoint.py)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from reconciler.sandbox.store import Store


def _checkpointers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "sandbox-wal-checkpoint"]


def test_commits_never_checkpoint_and_the_log_is_brought_in_beside_them(tmp_path: Path) -> None:
    path = str(tmp_path / "sandbox.sqlite")
    before = len(_checkpointers())
    store = Store(path)
    try:
        with store.reading() as conn:
            assert conn.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
        assert len(_checkpointers()) == before + 1
        empty = Path(path).stat().st_size
        for i in range(300):
            with store.transaction() as conn:
                store.put(conn, {"resourceType": "Observation", "id": f"o{i}", "meta": {}})
        # Only a checkpoint copies pages from the log into the database file itself.
        deadline = time.monotonic() + 10
        while Path(path).stat().st_size <= empty and time.monotonic() < deadline:
            time.sleep(0.05)
        assert Path(path).stat().st_size > empty
    finally:
        store.close()
    assert len(_checkpointers()) == before  # closed with the store
    reopened = sqlite3.connect(path)
    try:
        assert reopened.execute("SELECT COUNT(*) FROM resources").fetchone() == (300,)
    finally:
        reopened.close()


def test_an_in_memory_store_has_no_checkpointer() -> None:
    before = len(_checkpointers())
    store = Store()
    try:
        assert len(_checkpointers()) == before
    finally:
        store.close()
