"""The supervisor: starts the reader and the writer, restarts them, handles signals and health.

Signal handlers only record the signal and wake the loop through the wakeup fd, never log or work;
`loop_once` dispatches to `handle_<signal>`. The reader and the writer are restarted as a pair:
the new reader's first full scan re-reads the tree, so nothing is lost in between and nothing
unchanged is rewritten. A pair that keeps dying at start stops the daemon with exit code 2.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from assetmgr import __version__, config, logs, metrics
from assetmgr.config import Config, ConfigError
from assetmgr.daemon import sdnotify
from assetmgr.daemon.httpd import StatusServer
from assetmgr.exitcodes import ExitCode
from assetmgr.messages import Report, ReportKind
from assetmgr.pipeline import reader, schemas
from assetmgr.pipeline.schemas import Registry, SchemaError
from assetmgr.store import writer_loop
from assetmgr.store.connection import redact
from assetmgr.store.writer import WriterOptions
from assetmgr.webconfig import WebConfigError

log = logging.getLogger("assetmgr.supervisor")

BOOT_WINDOW = 5.0
BOOT_FAILURES = 5
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@dataclass
class Pipeline:
    reader: BaseProcess
    writer: BaseProcess
    control: Connection  # supervisor <-> reader: commands out, the reader's condition back
    events: Connection  # writer -> supervisor
    started: float
    stopping: bool = False


@dataclass
class State:
    """What /status, /readyz and /healthz report; written by the loop, read by HTTP threads."""

    hydrated: bool = False
    last_sync: float | None = None
    counts: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    unhealthy: str | None = None
    restarts: int = 0
    role: str = "standby"
    degraded: str | None = None  # the reader's alarm: root gone, watch limit reached
    workers: list[int] = field(default_factory=list)


class Supervisor:
    def __init__(
        self, cfg: Config, registry: Registry, cli_values: dict[str, Any] | None = None
    ) -> None:
        self.cfg = cfg
        self.registry = registry
        self.cli_values = cli_values or {}
        self.ctx = mp.get_context("spawn")
        self.state = State()
        self.pipeline: Pipeline | None = None
        self.signals: list[int] = []
        self.exit_code: int | None = None
        self.stop_deadline: float | None = None
        self.boot_failures = 0
        self.next_watchdog = 0.0
        self.mp_dir = tempfile.mkdtemp(prefix="assetmgr-metrics-")
        self._wake_r, self._wake_w = socket.socketpair()
        self.http: StatusServer | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def run(self) -> int:
        logs.name_process("supervisor")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = self.mp_dir
        self._install_signals()
        try:  # bind now: an address in use stops the start before any child exists
            web = self.cfg.web_security()
            self.http = StatusServer(
                self.cfg.metrics_addr, self.healthy, self.ready, self.status, self.mp_dir, web
            )
        except WebConfigError as e:
            log.error("configuration error: %s", e)
            return ExitCode.USAGE
        except OSError as e:
            log.error("cannot listen on %s: %s", self.cfg.metrics_addr, e.strerror)
            return ExitCode.USAGE
        log.info(
            "assetmgr %s starting",
            __version__,
            extra={
                "root": self.cfg.root,
                "valkey": redact(self.cfg.valkey_url),
                "http": self.cfg.metrics_addr,
            },
        )
        self.pipeline = self._start_pipeline()
        # Serve only now: before there is a pipeline, /healthz would call a starting daemon
        # unhealthy. A probe that connected meanwhile waits in the listen backlog.
        self.http.start()
        sdnotify.notify("STATUS=hydrating")
        try:
            while self.exit_code is None:
                self.loop_once()
        finally:
            self._shutdown()
        return self.exit_code

    def _install_signals(self) -> None:
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        for signum in SIGNALS:
            signal.signal(signum, self._record_signal)

    def _record_signal(self, signum: int, frame: object) -> None:
        self.signals.append(signum)  # NO LOGGING, no work: the loop handles it

    def _start_pipeline(self) -> Pipeline:
        cfg = self.cfg
        inbox, to_writer = self.ctx.Pipe(duplex=False)
        events, events_w = self.ctx.Pipe(duplex=False)
        control_r, control = self.ctx.Pipe(duplex=True)
        writer = self.ctx.Process(
            target=writer_loop.serve,
            args=(inbox, events_w, WriterOptions.from_config(self.cfg, oneshot=False)),
            name="assetmgr-writer",
        )
        rdr = self.ctx.Process(
            target=reader.serve,
            args=(reader.ReaderOptions.from_config(self.cfg), to_writer, control_r),
            name="assetmgr-reader",
        )
        writer.start()
        rdr.start()
        for end in (inbox, to_writer, events_w, control_r):
            end.close()
        log.info(
            "pipeline started",
            extra={"reader": rdr.pid, "writer": writer.pid, "workers": cfg.workers},
        )
        return Pipeline(rdr, writer, control, events, time.monotonic())

    # -- the loop ---------------------------------------------------------------------------

    def loop_once(self, now: float | None = None) -> None:
        p = self.pipeline
        waitables: list[Any] = [self._wake_r]
        if p is not None:
            waitables += [p.reader.sentinel, p.writer.sentinel, p.events, p.control]
        wait(waitables, timeout=0.5)
        now = time.monotonic() if now is None else now
        self._drain_wakeup()
        while self.signals:
            signum = self.signals.pop(0)
            getattr(self, f"handle_{signal.Signals(signum).name.lower()}")(now)
        p = self.pipeline  # a handler may have replaced it
        if p is not None:
            self._read_events(p)
            self._check_children(p, now)
        if self.stop_deadline is not None and now > self.stop_deadline:
            log.error("children did not stop in time; killing them")
            self._kill_pipeline()
            self.exit_code = ExitCode.OK
        self._watchdog(now)

    def _drain_wakeup(self) -> None:
        try:
            while self._wake_r.recv(512):
                pass
        except (BlockingIOError, OSError):
            pass

    def _read_events(self, p: Pipeline) -> None:
        try:
            while p.events.poll(0):
                self._on_report(p.events.recv())
            while p.control.poll(0):
                kind, value = p.control.recv()
                if kind == "problem":
                    self.state.degraded = value
                elif kind == "workers":
                    self.state.workers = value
        except (EOFError, OSError):
            pass

    def _on_report(self, report: Report) -> None:
        self.state.rejected = report.rejected
        self.state.counts = report.counts
        self.state.role = report.role
        if report.kind is ReportKind.RESCAN and self.pipeline is not None:
            with contextlib.suppress(BrokenPipeError, OSError):
                self.pipeline.control.send("rescan")
        if report.kind is ReportKind.SYNCED:
            self.state.last_sync = time.time()
            if not self.state.hydrated:
                self.state.hydrated = True
                metrics.READY.set(1)
                sdnotify.notify("READY=1\nSTATUS=watching")
                log.info("hydrated; watching", extra=self.state.counts)

    def _check_children(self, p: Pipeline, now: float) -> None:
        alive = p.reader.is_alive(), p.writer.is_alive()
        if all(alive):
            return
        if p.stopping:
            if not any(alive):
                self._reap(p)
                if self.pipeline is p:
                    self.pipeline = None
                if self.exit_code is None and self.stop_deadline is not None:
                    self.exit_code = ExitCode.OK
            return
        dead = "reader" if not alive[0] else "writer"
        code = (p.reader if dead == "reader" else p.writer).exitcode
        log.error("%s died (exit code %s); restarting the pipeline", dead, code)
        metrics.CHILD_RESTARTS.labels(dead).inc()
        self.state.restarts += 1
        self.boot_failures = self.boot_failures + 1 if now - p.started < BOOT_WINDOW else 0
        self._stop_pipeline(p, graceful=True)
        self._kill_pipeline()
        if self.boot_failures >= BOOT_FAILURES or code in (ExitCode.USAGE, ExitCode.VALKEY):
            # Exit 3: Valkey refused the writer (credentials, TLS), which a restart repeats.
            self.state.unhealthy = f"{dead} cannot start (exit code {code})"
            log.error("%s; giving up", self.state.unhealthy)
            self.exit_code = ExitCode.VALKEY if code == ExitCode.VALKEY else ExitCode.USAGE
            return
        self.pipeline = self._start_pipeline()

    def _stop_pipeline(self, p: Pipeline, graceful: bool) -> None:
        p.stopping = True
        if graceful:
            with contextlib.suppress(BrokenPipeError, OSError):
                p.control.send("stop")
            if p.reader.pid and p.reader.is_alive():
                os.kill(p.reader.pid, signal.SIGTERM)

    def _kill_pipeline(self) -> None:
        p = self.pipeline
        if p is None:
            return
        deadline = time.monotonic() + 2.0
        for proc in (p.reader, p.writer):
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(1.0)
        self._reap(p)
        self.pipeline = None

    def _reap(self, p: Pipeline) -> None:
        self._read_events(p)
        for proc in (p.reader, p.writer):
            metrics.process_died(proc.pid)
        p.control.close()
        p.events.close()

    def _watchdog(self, now: float) -> None:
        interval = sdnotify.watchdog_interval()
        if interval and now >= self.next_watchdog and self.pipeline is not None:
            sdnotify.notify("WATCHDOG=1")
            self.next_watchdog = now + interval

    # -- signals ----------------------------------------------------------------------------

    def handle_sigterm(self, now: float) -> None:
        if self.stop_deadline is not None:
            log.warning("second stop signal: forcing exit")
            self._kill_pipeline()
            self.exit_code = ExitCode.OK
            return
        log.info("stopping: draining queues", extra={"deadline_s": self.cfg.shutdown_timeout})
        sdnotify.notify("STOPPING=1")
        self.stop_deadline = now + self.cfg.shutdown_timeout
        if self.pipeline is None:
            self.exit_code = ExitCode.OK
        else:
            self._stop_pipeline(self.pipeline, graceful=True)

    handle_sigint = handle_sigterm

    def handle_sighup(self, now: float) -> None:
        """Reload the configuration and the schemas; on success restart the pipeline (rescan)."""
        log.info("reloading configuration and schemas")
        sdnotify.notify("RELOADING=1")
        try:
            cfg = config.load("daemon", self.cli_values)
            options = schemas.Options.from_config(cfg)
            registry = schemas.load(cfg.schemas, cfg.schema_rules, cfg.validators, options)
        except (ConfigError, SchemaError) as e:
            log.error("reload failed, keeping the running configuration: %s", e)
            sdnotify.notify("READY=1")
            return
        # The Valkey endpoint (and an embedded server) stays: changing it needs a restart.
        kept = ("valkey_url", "embedded", "valkey_password_file")
        self.cfg = self.cfg.replace(**{k: v for k, v in cfg.values.items() if k not in kept})
        self.registry = registry
        if self.http is not None:  # the users and certificate files may have changed
            self.http.secure(cfg.web_security())
        if self.pipeline is not None:
            self._stop_pipeline(self.pipeline, graceful=True)
            self._wait_stopped(self.pipeline, now + self.cfg.shutdown_timeout)
        self.pipeline = self._start_pipeline()
        sdnotify.notify("READY=1")

    def _wait_stopped(self, p: Pipeline, deadline: float) -> None:
        for proc in (p.reader, p.writer):
            proc.join(max(0.0, deadline - time.monotonic()))
        self._kill_pipeline()

    # -- health -----------------------------------------------------------------------------

    def healthy(self) -> tuple[bool, str]:
        if self.state.unhealthy:
            return False, self.state.unhealthy
        p = self.pipeline
        if p is None or not (p.reader.is_alive() and p.writer.is_alive()):
            return False, "pipeline restarting"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        if self.state.degraded:
            return False, self.state.degraded
        if not self.state.hydrated:
            return False, "first hydration not finished"
        ok, reason = self.healthy()
        return ok, "ready" if ok else reason

    def status(self) -> dict[str, object]:
        return {
            "version": __version__,
            "ready": self.ready()[0],
            "root": self.cfg.root,
            "valkey": redact(self.cfg.valkey_url),
            "last_sync": self.state.last_sync,
            "counts": self.state.counts,
            "rejected": self.state.rejected,
            "restarts": self.state.restarts,
            "degraded": self.state.degraded,
            "processes": {
                "supervisor": os.getpid(),
                "reader": self.pipeline.reader.pid if self.pipeline else None,
                "writer": self.pipeline.writer.pid if self.pipeline else None,
                "workers": self.state.workers,
            },
            "role": self.state.role,
        }

    def _shutdown(self) -> None:
        if self.pipeline is not None:
            self._kill_pipeline()
        if self.http is not None:
            self.http.stop()
        signal.set_wakeup_fd(-1)
        shutil.rmtree(self.mp_dir, ignore_errors=True)
        log.info("stopped")
