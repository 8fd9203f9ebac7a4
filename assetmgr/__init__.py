"""assetmgr: the single writer of the asset keyspace in Valkey."""

__version__ = "0.1.0"
