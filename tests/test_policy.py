"""appserver.policy: what a worker's exit status means, whose heartbeat lapsed, how long to wait
before a respawn.  Wait statuses are real: each comes from a tiny forked child."""

from __future__ import annotations

import functools
import os
import signal

import pytest

from appserver.policy import (
    ABORT_GRACE,
    EXIT_APP_LOAD_ERROR,
    Liveness,
    Reason,
    describe_exit,
    respawn_delay,
    timeout_actions,
    worker_delta,
)


@functools.cache
def exited(code: int) -> int:
    """The wait status of a child that exited with ``code``."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os._exit(code)
    return os.waitpid(pid, 0)[1]


@functools.cache
def killed(sig: int) -> int:
    """The wait status of a child killed by ``sig`` (core dumps off, so the status is plain)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            import resource
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            if sig != signal.SIGKILL:
                signal.signal(sig, signal.SIG_DFL)  # pytest may have its own handlers
            os.kill(os.getpid(), sig)
        finally:
            os._exit(99)
    return os.waitpid(pid, 0)[1]


def verdict(status: int, *, aborted: bool = False, killed_by_master: bool = False,
            stopping: bool = False, timeout: int = 30) -> tuple[Reason, str, str]:
    result = describe_exit(1234, status, aborted_by_master=aborted, killed_by_master=killed_by_master,
                           asked_to_stop=stopping, timeout=timeout)
    return result.reason, result.level, result.message


def test_the_statuses_are_what_the_kernel_reports() -> None:
    assert os.WIFEXITED(exited(3)) and os.WEXITSTATUS(exited(3)) == 3
    assert os.WIFSIGNALED(killed(signal.SIGKILL)) and os.WTERMSIG(killed(signal.SIGKILL)) == signal.SIGKILL
    assert os.waitstatus_to_exitcode(killed(signal.SIGTERM)) == -signal.SIGTERM


def test_clean_exit() -> None:
    reason, level, message = verdict(exited(0))
    assert (reason, level) == (Reason.STOPPED, "info")
    assert "1234" in message


def test_app_load_error() -> None:
    reason, level, message = verdict(exited(EXIT_APP_LOAD_ERROR))
    assert (reason, level) == (Reason.APP_LOAD_ERROR, "error")
    assert "failed to load or start the app" in message


@pytest.mark.parametrize("code", [1, 2, 5, 255])
def test_crash_names_the_status(code: int) -> None:
    reason, level, message = verdict(exited(code))
    assert (reason, level) == (Reason.CRASHED, "error")
    assert f"status {code}" in message


def test_boot_error_names_the_hooks() -> None:
    # Status 3: a post_fork/post_worker_init hook raised (gunicorn's WORKER_BOOT_ERROR).
    reason, level, message = verdict(exited(3))
    assert (reason, level) == (Reason.BOOT_ERROR, "error")
    assert "post_fork or post_worker_init" in message


@pytest.mark.parametrize("sig", [signal.SIGABRT, signal.SIGKILL])
def test_timeout_kill_is_reported_as_such(sig: signal.Signals) -> None:
    reason, level, message = verdict(killed(sig), aborted=True, timeout=17)
    assert (reason, level) == (Reason.TIMEOUT_KILL, "error")
    assert "17s" in message and "--timeout" in message and sig.name in message
    assert "out-of-memory" not in message and "not by the master" not in message


def test_an_aborted_worker_that_dies_of_something_else_is_not_a_timeout_kill() -> None:
    reason, _, message = verdict(killed(signal.SIGSEGV), aborted=True)
    assert reason is Reason.EXTERNAL_SIGNAL and "SIGSEGV" in message


def test_graceful_timeout_kill() -> None:
    reason, level, message = verdict(killed(signal.SIGKILL), killed_by_master=True, stopping=True)
    assert (reason, level) == (Reason.GRACE_KILL, "warning")
    assert "graceful timeout" in message and "SIGKILL" in message


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGQUIT, signal.SIGINT])
def test_a_worker_asked_to_stop_that_dies_of_the_stop_signal_stopped(sig: signal.Signals) -> None:
    reason, level, message = verdict(killed(sig), stopping=True)
    assert (reason, level) == (Reason.STOPPED, "info")
    assert sig.name in message


def test_sigkill_from_someone_else_hints_at_the_oom_killer() -> None:
    # gunicorn #2215: only a SIGKILL the master did not send earns the out-of-memory hint.
    for stopping in (False, True):
        reason, level, message = verdict(killed(signal.SIGKILL), stopping=stopping)
        assert (reason, level) == (Reason.EXTERNAL_SIGNAL, "error")
        assert "not by the master" in message and "out-of-memory" in message and "SIGKILL" in message


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGSEGV, signal.SIGUSR1, signal.SIGHUP])
def test_other_signals_are_external_without_the_oom_hint(sig: signal.Signals) -> None:
    reason, level, message = verdict(killed(sig))
    assert (reason, level) == (Reason.EXTERNAL_SIGNAL, "error")
    assert sig.name in message and "not by the master" in message and "out-of-memory" not in message


def test_a_signal_without_a_name() -> None:
    number = signal.SIGRTMIN + 3
    _, _, message = verdict(killed(number))
    assert f"signal {number}" in message


def test_core_dump_bit_does_not_change_the_verdict() -> None:
    assert verdict(killed(signal.SIGABRT) | 0x80, aborted=True)[0] is Reason.TIMEOUT_KILL


# ---- heartbeats ---------------------------------------------------------------------------------

def test_no_timeout_no_action() -> None:
    assert timeout_actions([Liveness(1, last_beat=0.0, abort_sent_at=None)], now=1e9, timeout=0) == {}


def test_abort_only_after_the_timeout_has_passed() -> None:
    workers = [Liveness(1, last_beat=100.0, abort_sent_at=None),
               Liveness(2, last_beat=69.9, abort_sent_at=None),
               Liveness(3, last_beat=70.0, abort_sent_at=None)]
    assert timeout_actions(workers, now=100.0, timeout=30) == {2: "abort"}


def test_kill_after_the_abort_grace() -> None:
    workers = [Liveness(1, last_beat=0.0, abort_sent_at=100.0),
               Liveness(2, last_beat=0.0, abort_sent_at=100.0 - ABORT_GRACE),
               Liveness(3, last_beat=99.0, abort_sent_at=90.0)]  # a late beat does not save it
    assert timeout_actions(workers, now=100.0, timeout=30) == {2: "kill", 3: "kill"}


def test_every_lapsed_worker_is_named() -> None:
    workers = [Liveness(pid, last_beat=float(pid), abort_sent_at=None) for pid in range(10)]
    assert timeout_actions(workers, now=15.0, timeout=10) == {pid: "abort" for pid in range(5)}


# ---- spawning -----------------------------------------------------------------------------------

def test_worker_delta() -> None:
    assert (worker_delta(2, 5), worker_delta(5, 2), worker_delta(3, 3)) == (3, -3, 0)


def test_respawn_delay_backs_off_to_a_ceiling() -> None:
    delays = [respawn_delay(n) for n in range(0, 20)]
    assert delays[:4] == [0.0, 0.0, 0.1, 0.2]
    assert delays == sorted(delays)
    assert max(delays) == 5.0 and delays[-1] == 5.0
