"""The store layer: Valkey connections, the keyspace, the commit scripts, the writer lease and
the writer process, the only one that writes. It knows nothing of files, schemas or processes
above it."""
