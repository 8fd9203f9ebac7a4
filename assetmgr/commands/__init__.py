"""The command layer: the command line and the one-shot modes (verify, hydrate, status, get),
which run the pipeline once; `daemon` hands over to the daemon layer."""
