"""medplum-tenancy-reconciler: declarative tenant membership for Medplum."""

__version__ = "0.2.0"
