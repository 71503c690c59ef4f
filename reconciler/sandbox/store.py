"""SQLite storage for the sandbox: resources plus a search index, one writer at a time.

Every resource is one row (JSON in `content`); `search_index` holds (seq, param, value) rows for
the search parameters we support, so `_id` lists, identifiers and `_compartment` searches stay
index look-ups at 100,000 patients. One connection guarded by one lock keeps it simple and safe
under ThreadingHTTPServer; latency simulation sleeps outside the lock, so clients still overlap.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reconciler.sandbox.checkpoint import WAL_SIZE_LIMIT, WalCheckpointer
from reconciler.sandbox.compartments import linked_patients

Resource = dict[str, Any]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS resources (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  type TEXT NOT NULL,
  id TEXT NOT NULL,
  version_id TEXT NOT NULL,
  last_updated TEXT NOT NULL,
  content TEXT NOT NULL,
  UNIQUE (type, id)
);
CREATE TABLE IF NOT EXISTS search_index (
  seq INTEGER NOT NULL,
  param TEXT NOT NULL,
  value TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_search_value ON search_index (param, value, seq);
CREATE INDEX IF NOT EXISTS ix_search_seq ON search_index (seq);
CREATE INDEX IF NOT EXISTS ix_resources_updated ON resources (type, last_updated, seq);
-- Earlier versions, kept when a resource is replaced or deleted (content NULL: a deletion).
-- The current version lives in `resources` only, so the seed's bulk insert writes no history.
CREATE TABLE IF NOT EXISTS history (
  hseq INTEGER PRIMARY KEY AUTOINCREMENT,
  type TEXT NOT NULL,
  id TEXT NOT NULL,
  version_id TEXT NOT NULL,
  last_updated TEXT NOT NULL,
  content TEXT
);
CREATE INDEX IF NOT EXISTS ix_history ON history (type, id, hseq);
"""

HISTORY_LIMIT = 100  # Medplum's instance history: the newest 100 versions, newest first


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def new_id() -> str:
    return str(uuid.uuid4())


def accounts_of(resource: Resource) -> list[str]:
    """Union of meta.accounts and the legacy meta.account, deduplicated, in order."""
    meta = resource.get("meta") or {}
    refs: list[str] = []
    for entry in meta.get("accounts") or []:
        ref = entry.get("reference") if isinstance(entry, dict) else None
        if ref and ref not in refs:
            refs.append(ref)
    legacy = meta.get("account")
    if isinstance(legacy, dict) and legacy.get("reference") and legacy["reference"] not in refs:
        refs.append(legacy["reference"])
    return refs


def compartment_id(ref: str) -> str | None:
    """The compartment a `meta.accounts` entry files a resource under: its id (Medplum keeps
    compartments as a column of ids, so type, case and a `_history` suffix do not matter;
    medplum-api.md, "Compartments match by id"). An absolute URL files it under none."""
    if "://" in ref:
        return None
    parts = ref.split("/")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        return None
    return parts[1].lower()


def compartment_value(value: str) -> str:
    """A `_compartment` search value as the id it matches: the last segment (so
    `Organization/x/_history/1` matches nothing, as observed on Medplum), lower case."""
    return value.rsplit("/", 1)[-1].lower()


def index_rows(resource: Resource) -> Iterator[tuple[str, str]]:
    """(param, value) pairs that make this resource findable."""
    rtype = resource["resourceType"]
    compartments = [compartment_id(ref) for ref in accounts_of(resource)]
    if rtype == "Patient":
        compartments.append(str(resource["id"]).lower())
    compartments += [compartment_id(patient) for patient in linked_patients(resource)]
    for key in dict.fromkeys(c for c in compartments if c):
        yield "_compartment", key
    for ident in resource.get("identifier") or []:
        if isinstance(ident, dict) and ident.get("value"):
            yield "identifier", f"{ident.get('system', '')}|{ident['value']}"
            yield "identifier:value", str(ident["value"])
    for link in ("subject", "patient"):
        target = resource.get(link)
        if isinstance(target, dict) and target.get("reference"):
            yield link, str(target["reference"])
    if rtype == "Patient":
        for gp in resource.get("generalPractitioner") or []:
            if isinstance(gp, dict) and gp.get("reference"):
                yield "general-practitioner", str(gp["reference"])
        if resource.get("birthDate"):
            yield "birthdate", str(resource["birthDate"])
    names = resource.get("name")
    if isinstance(names, str):  # AccessPolicy.name, Organization.name
        yield "name", names.lower()
    for name in names if isinstance(names, list) else []:
        if not isinstance(name, dict):
            continue
        parts = [name.get("family"), *(name.get("given") or []), name.get("text")]
        for part in parts:
            if isinstance(part, str) and part:
                yield "name", part.lower()
    if rtype == "ProjectMembership":
        yield from _membership_rows(resource)
    if rtype == "AuditEvent":  # token: system|code, or the code alone
        for coding in resource.get("subtype") or []:
            if isinstance(coding, dict) and coding.get("code"):
                yield "subtype", f"{coding.get('system', '')}|{coding['code']}"
                yield "subtype", str(coding["code"])
    # organization: Location.managingOrganization, HealthcareService.providedBy,
    # PractitionerRole.organization; practitioner: PractitionerRole.practitioner.
    for field, param in (
        ("managingOrganization", "organization"),
        ("providedBy", "organization"),
        ("organization", "organization"),
        ("practitioner", "practitioner"),
    ):
        target = resource.get(field)
        if rtype != "Patient" and isinstance(target, dict) and target.get("reference"):
            yield param, str(target["reference"])


def _membership_rows(membership: Resource) -> Iterator[tuple[str, str]]:
    """ProjectMembership's search parameters (medplum-api.md, "Tenant access")."""
    for param in ("profile", "user", "project"):
        ref = (membership.get(param) or {}).get("reference")
        if isinstance(ref, str) and ref:
            yield param, ref
            if param == "profile":
                yield "profile-type", ref.split("/", 1)[0]
            if param == "user":
                display = (membership.get("user") or {}).get("display")
                if isinstance(display, str) and display:
                    yield "user-name", display.lower()
    policies = [membership.get("accessPolicy")]
    policies += [a.get("policy") for a in membership.get("access") or [] if isinstance(a, dict)]
    for policy in policies:
        ref = policy.get("reference") if isinstance(policy, dict) else None
        if isinstance(ref, str) and ref:
            yield "access-policy", ref
    if isinstance(membership.get("externalId"), str):
        yield "external-id", membership["externalId"]


class Store:
    def __init__(self, path: str = ":memory:") -> None:
        self.path = path
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.RLock()
        self._checkpointer: WalCheckpointer | None = None
        with self._lock:
            if path != ":memory:":
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=NORMAL")
                # Checkpoints run beside the store, not in a COMMIT under its lock.
                self._conn.execute("PRAGMA wal_autocheckpoint=0")
                self._conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            self._conn.executescript(_SCHEMA)
        if path != ":memory:":
            self._checkpointer = WalCheckpointer(path)

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None
        with self._lock:
            self._conn.close()  # the last connection: SQLite checkpoints the whole log

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the store across several calls (conditional create: search, then create)."""
        with self._lock:
            yield

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._conn

    # --- single resources ------------------------------------------------------------------

    def get(self, rtype: str, rid: str) -> Resource | None:
        with self.reading() as conn:
            row = conn.execute(
                "SELECT content FROM resources WHERE type=? AND id=?", (rtype, rid)
            ).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, conn: sqlite3.Connection, resource: Resource) -> Resource:
        """Insert or replace within a transaction, stamping a new version."""
        meta = resource.setdefault("meta", {})
        meta["versionId"] = new_id()
        meta["lastUpdated"] = now_iso()
        rtype, rid = resource["resourceType"], resource["id"]
        content = json.dumps(resource, separators=(",", ":"))
        row = conn.execute(
            "SELECT seq FROM resources WHERE type=? AND id=?", (rtype, rid)
        ).fetchone()
        if row:
            seq = row[0]
            self._keep_version(conn, seq)
            conn.execute(
                "UPDATE resources SET version_id=?, last_updated=?, content=? WHERE seq=?",
                (meta["versionId"], meta["lastUpdated"], content, seq),
            )
            conn.execute("DELETE FROM search_index WHERE seq=?", (seq,))
        else:
            cur = conn.execute(
                "INSERT INTO resources (type, id, version_id, last_updated, content) "
                "VALUES (?, ?, ?, ?, ?)",
                (rtype, rid, meta["versionId"], meta["lastUpdated"], content),
            )
            seq = cur.lastrowid
        conn.executemany(
            "INSERT INTO search_index (seq, param, value) VALUES (?, ?, ?)",
            [(seq, p, v) for p, v in index_rows(resource)],
        )
        return resource

    def delete(self, conn: sqlite3.Connection, rtype: str, rid: str) -> bool:
        row = conn.execute(
            "SELECT seq FROM resources WHERE type=? AND id=?", (rtype, rid)
        ).fetchone()
        if not row:
            return False
        self._keep_version(conn, row[0])
        conn.execute(
            "INSERT INTO history (type, id, version_id, last_updated, content) "
            "VALUES (?, ?, ?, ?, NULL)",
            (rtype, rid, new_id(), now_iso()),
        )
        conn.execute("DELETE FROM search_index WHERE seq=?", (row[0],))
        conn.execute("DELETE FROM resources WHERE seq=?", (row[0],))
        return True

    @staticmethod
    def _keep_version(conn: sqlite3.Connection, seq: int) -> None:
        conn.execute(
            "INSERT INTO history (type, id, version_id, last_updated, content) "
            "SELECT type, id, version_id, last_updated, content FROM resources WHERE seq=?",
            (seq,),
        )

    def history(self, rtype: str, rid: str) -> list[tuple[str, str, Resource | None]] | None:
        """(versionId, lastUpdated, resource or None for a deletion), newest first, at most
        HISTORY_LIMIT; None when the resource never existed."""
        with self.reading() as conn:
            current = conn.execute(
                "SELECT version_id, last_updated, content FROM resources WHERE type=? AND id=?",
                (rtype, rid),
            ).fetchone()
            older = conn.execute(
                "SELECT version_id, last_updated, content FROM history WHERE type=? AND id=? "
                "ORDER BY hseq DESC LIMIT ?",
                (rtype, rid, HISTORY_LIMIT),
            ).fetchall()
        rows = ([current] if current else []) + older
        if not rows:
            return None
        return [(v, t, json.loads(c) if c else None) for v, t, c in rows[:HISTORY_LIMIT]]

    def bulk_insert(self, resources: Iterable[Resource], *, replace: bool = False) -> int:
        """Fast path for the seed: versions stamped here, one transaction, executemany."""
        count = 0
        with self.transaction() as conn:
            for resource in resources:
                existing = conn.execute(
                    "SELECT 1 FROM resources WHERE type=? AND id=?",
                    (resource["resourceType"], resource["id"]),
                ).fetchone()
                if existing and not replace:
                    continue
                self.put(conn, resource)
                count += 1
        return count

    # --- search ----------------------------------------------------------------------------

    def query(
        self,
        types: Sequence[str],
        where: Sequence[str],
        args: Sequence[Any],
        *,
        order: str,
        limit: int,
        offset: int,
    ) -> list[tuple[int, str, Resource]]:
        sql, params = self._select("r.seq, r.last_updated, r.content", types, where, args)
        sql += f" ORDER BY {order} LIMIT ? OFFSET ?"
        with self.reading() as conn:
            rows = conn.execute(sql, [*params, limit, offset]).fetchall()
        return [(seq, updated, json.loads(content)) for seq, updated, content in rows]

    def count(self, types: Sequence[str], where: Sequence[str], args: Sequence[Any]) -> int:
        sql, params = self._select("COUNT(*)", types, where, args)
        with self.reading() as conn:
            return int(conn.execute(sql, params).fetchone()[0])

    @staticmethod
    def _select(
        columns: str, types: Sequence[str], where: Sequence[str], args: Sequence[Any]
    ) -> tuple[str, list[Any]]:
        marks = ",".join("?" * len(types))
        clauses = [f"r.type IN ({marks})", *where]
        return f"SELECT {columns} FROM resources r WHERE " + " AND ".join(clauses), [*types, *args]

    def all_of_type(self, rtype: str) -> list[Resource]:
        with self.reading() as conn:
            rows = conn.execute("SELECT content FROM resources WHERE type=?", (rtype,)).fetchall()
        return [json.loads(r[0]) for r in rows]

    def compartment_members(self, patient_ref: str) -> list[Resource]:
        """Every resource in a Patient's compartment except the Patient itself, oldest first."""
        with self.reading() as conn:
            rows = conn.execute(
                "SELECT r.content FROM resources r JOIN search_index s ON s.seq = r.seq "
                "WHERE s.param='_compartment' AND s.value=? AND r.type != 'Patient' "
                "ORDER BY r.seq",
                (compartment_value(patient_ref),),
            ).fetchall()
        return [json.loads(r[0]) for r in rows]
