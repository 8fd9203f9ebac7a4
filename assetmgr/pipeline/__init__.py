"""The pipeline layer: which files are assets (tree), what changed (watcher, schedule, reader),
and the per-file work in the worker pool (read, parse, validate, compress, hash). It reads
Valkey only through the store layer, to skip what is stored unchanged."""
