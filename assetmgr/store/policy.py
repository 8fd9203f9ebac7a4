"""How a writer run differs between a one-shot command (`hydrate`) and the daemon.

The writer loop is the same for both; what differs is a handful of decisions, each named
here once: what to do without the lease, whether Valkey trouble is retried until it ends, who
hears about progress, how much is logged, and how a failure that retrying cannot cure ends the
process. Both policies are small frozen values, picklable: the writer process is spawned with
its options.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from assetmgr.exitcodes import ExitCode
from assetmgr.messages import Outcome


@dataclass(frozen=True)
class Daemon:
    """The daemon's writer, under the supervisor: a hot standby until it holds the lease,
    patient with Valkey, reporting as it goes."""

    # Without the lease (or after losing it): keep the view of the disk and take the lease
    # over when it frees, rather than wait `wait_lease` seconds for it at the start, then
    # refuse (and stop when it is lost).
    standby: ClassVar[bool] = True
    wait_lease: ClassVar[float] = 0.0  # not waited for: a standby takes it whenever it frees
    # Cut connections, refused and unacknowledged writes are retried until Valkey is back,
    # rather than failing the run after `connect_timeout`.
    retries: ClassVar[bool] = True
    # Reports role, status, syncs and rescan requests while it runs (so it may drop writes a
    # rescan redoes), rather than one report of the whole plan at the end, whose outcome a
    # refused prune then is.
    reports: ClassVar[bool] = True
    # Per-change lines at info and a warning per new rejection, rather than all at debug
    # because the command prints a summary (quiet).
    quiet: ClassVar[bool] = False

    def exit_code(self, outcome: Outcome, locked_out: bool) -> ExitCode | None:
        """The exit code of a run that a restart would not cure (a boot error: the supervisor
        stops instead of restarting it): a misconfiguration, or a Valkey that locked us out
        (credentials, TLS). None: end as usual."""
        if outcome is Outcome.MISCONFIGURED:
            return ExitCode.USAGE
        if locked_out:
            return ExitCode.VALKEY
        return None


@dataclass(frozen=True)
class OneShot:
    """A one-shot run: takes the lease at the start, waiting up to `wait_lease` seconds, or
    refuses; fails when Valkey stays away; ends with one report that holds the whole plan."""

    wait_lease: float = 0.0

    standby: ClassVar[bool] = False
    retries: ClassVar[bool] = False
    reports: ClassVar[bool] = False
    quiet: ClassVar[bool] = True

    def exit_code(self, outcome: Outcome, locked_out: bool) -> ExitCode | None:
        """None: the command turns the final report into its exit code."""
        return None


Policy = Daemon | OneShot
