"""A local Medplum-compatible server (stdlib HTTP + SQLite)."""
