"""WAL checkpoints for the sandbox's store, off its lock.

SQLite checkpoints the write-ahead log inside the COMMIT that passes `wal_autocheckpoint`
pages, on the committing connection — for the sandbox, while the store's one lock is held, so
every request waited for it. Measured on a 5,000-patient store: one `$set-accounts` in ~60 took
8-9 ms instead of ~1 (the checkpoint's fsync), and those stalls were a third of the write
path's time. Here the store's connection checkpoints never itself; a thread of its own, on a
second connection, runs PASSIVE checkpoints, which never wait for and never block the writer.
Nothing changes in what the sandbox answers, only when its file is brought up to date."""

from __future__ import annotations

import sqlite3
import threading

INTERVAL_S = 0.1  # the log stays a few MB at a few hundred writes a second
WAL_SIZE_LIMIT = 32 * 1024 * 1024  # what the log file is cut back to once it restarts


class WalCheckpointer:
    def __init__(self, path: str, *, interval_s: float = INTERVAL_S) -> None:
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="sandbox-wal-checkpoint", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error:
                continue  # busy or closing: the next round tries again

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._conn.close()
