"""The Medplum client: the one place the tool talks HTTP.

from reconciler.medplum import MedplumClient, get_resource_accounts, resource_has_account
"""

from reconciler.medplum.accounts import get_resource_accounts, resource_has_account
from reconciler.medplum.auth import ClientCredentialsAuth
from reconciler.medplum.client import MedplumClient
from reconciler.medplum.errors import (
    AuthError,
    HTTPStatusError,
    JobError,
    JobTimeout,
    MedplumError,
    TransportError,
)

__all__ = [
    "AuthError",
    "ClientCredentialsAuth",
    "HTTPStatusError",
    "JobError",
    "JobTimeout",
    "MedplumClient",
    "MedplumError",
    "TransportError",
    "get_resource_accounts",
    "resource_has_account",
]
