"""One log line per event, as text for people or JSON for journald and log shippers."""

from __future__ import annotations

import logging
import sys
import time

import orjson

# Attributes every LogRecord has; anything else was passed with `extra=` and is a field.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def _fields(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
        extra = " ".join(f"{k}={_quote(v)}" for k, v in _fields(record).items())
        line = f"{stamp} {record.levelname:<7} {record.processName}: {record.getMessage()}"
        if extra:
            line += " " + extra
        if record.exc_info:
            line += " | " + " ".join(self.formatException(record.exc_info).split())
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "process": record.processName,
            "pid": record.process,
            "logger": record.name,
            "msg": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


def _quote(value: object) -> str:
    text = str(value)
    return repr(text) if (" " in text or not text) else text


def setup(fmt: str = "text", level: str = "INFO") -> None:
    """Configure the root logger of this process: stderr, one line per record."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def name_process(role: str) -> None:
    """Name this process `assetmgr-<role>` for ps/top and for the log lines."""
    import multiprocessing

    multiprocessing.current_process().name = role
    try:
        with open("/proc/self/comm", "w") as comm:
            comm.write(f"assetmgr-{role}"[:15])
    except OSError:
        pass  # not Linux, or /proc is not mounted: only the name in ps is lost
