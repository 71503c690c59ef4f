"""Tenant manifests (design section 2): `load` reads files into Tenants, `explain` words
schema errors, `tenants` builds one Tenant from a document, `rules` checks across files."""

from reconciler.manifest.load import (
    DEFAULT_PATHS,
    MANIFEST_SUFFIXES,
    discover,
    format_path,
    load_manifests,
)
from reconciler.manifest.rules import cross_file_problems, select_targets

__all__ = [
    "DEFAULT_PATHS",
    "MANIFEST_SUFFIXES",
    "cross_file_problems",
    "discover",
    "format_path",
    "load_manifests",
    "select_targets",
]
