"""The Medplum client: the one place the tool talks HTTP."""
