"""The daemon layer: the supervisor of the reader and writer processes, its signals, systemd
notifications and the HTTP endpoint (/metrics, /healthz, /readyz, /status)."""
