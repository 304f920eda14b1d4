"""What the benchmark compares: worker classes x implementations x scenarios.

Everything selectable by name lives in one of three registries here, so that adding a worker
class (gevent, eventlet, tornado, asyncio) or a scenario is one line and needs no change to the
runner.  A *cell* is one (scenario, worker class, implementation) triple: one server started with
one app and measured by wrk through nginx.

The ``asgi`` class is the one class with more than two implementations: ours (``-k asgi``),
uvicorn, granian and gunicorn 27 (``-k asgi``) all run the scenario's ASGI twin from apps.py.
Ratios against gunicorn stay in the table's columns; the report adds ours against each of the
other peers (see ``report.peer_ratios``).

The WSGI peers (granian ``--interface wsgi``, uWSGI) have no worker classes of their own, so they
form classes of their own, measured once per scenario rather than once per class of ours, and
every WSGI class of ours is compared with them in the report: ``wsgi-peers`` runs them in their
fastest configuration for small requests (one thread per worker: uWSGI processes-only, granian
with one blocking thread; see bench/README.md, "WSGI peers"), ``wsgi-peers-32t`` with 32
threads per worker, enough for all of c=64 at once and for overlapping I/O waits.  uWSGI speaks its own
uwsgi protocol to nginx (``uwsgi_pass``, how it is deployed), so its cells use nginx's second
listener (see ``UPSTREAM_PROTOCOL`` and bench/nginx.py).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

# ---------------------------------------------------------------------------------------------
# Implementations: how to start a server.  Templates are str.format strings; every placeholder
# value is shell-quoted before substitution and the result is split with shlex, so paths with
# spaces survive.  Placeholders: {python} {workers} {worker_class} {threads} {threads_opt}
# {socket} {keep_alive} {app}.

OURS = "ours"
GUNICORN = "gunicorn"
UVICORN = "uvicorn"
GRANIAN = "granian"
GRANIAN_WSGI = "granian-wsgi"
UWSGI = "uwsgi"

DEFAULT_COMMANDS: dict[str, str] = {
    OURS: "{python} -m appserver serve -w {workers} -k {worker_class} {threads_opt} "
          "-b unix:{socket} --keep-alive {keep_alive} {app}",
    # --no-control-socket: gunicorn 27 otherwise opens ~/.gunicorn/gunicorn.ctl, state outside
    # the run's temp dir that a gunicorn the user runs elsewhere would collide with.
    GUNICORN: "{python} -m gunicorn -w {workers} -k {worker_class} {threads_opt} "
              "-b unix:{socket} --keep-alive {keep_alive} --no-control-socket {app}",
    # ASGI-only peers (they ignore {worker_class}).  uvicorn as its docs recommend for speed:
    # uvloop and httptools; its supervisor binds the socket and forks the workers.
    UVICORN: "{python} -m uvicorn --workers {workers} --uds {socket} --loop uvloop "
             "--http httptools --timeout-keep-alive {keep_alive} --no-access-log "
             "--log-level warning {app}",
    # granian: HTTP/1 only (nginx speaks 1.1 upstream), WebSockets off for the HTTP scenarios,
    # uvloop like the others, one runtime thread per worker (its default).  It has no keep-alive
    # timeout setting for HTTP/1: idle connections stay open until nginx closes them.
    GRANIAN: "{python} -m granian --interface asgi --workers {workers} --uds {socket} "
             "--loop uvloop --http 1 --no-ws --log-level warning {app}",
    # WSGI peers ({threads}: the class's threads per worker, 1 or 32; see SERVER_CLASSES).
    # granian: HTTP/1 only, WebSockets off, its default single runtime thread per worker; the
    # app runs in {threads} blocking threads per worker (its default would be 256).
    GRANIAN_WSGI: "{python} -m granian --interface wsgi --workers {workers} --uds {socket} "
                  "--http 1 --no-ws --blocking-threads {threads} --log-level warning {app}",
    # uWSGI from the pyuwsgi wheel, started through its run() (what its `uwsgi` console script
    # does; an extension module cannot be run with -m): a master and {workers} processes, each
    # with {threads} threads ({threads_opt} is empty for 1: processes-only), speaking the uwsgi
    # protocol on the socket.  --die-on-term: uWSGI
    # 2.0 reloads on SIGTERM otherwise; --disable-logging: no request log, like the others
    # (ours and gunicorn log no access lines by default); --need-app: fail, rather than serve
    # 500s, if the app does not import.  No keep-alive: the uwsgi protocol carries one request
    # per connection.
    UWSGI: "{python} -c 'import sys, pyuwsgi; sys.exit(pyuwsgi.run())' --master "
           "--workers {workers} {threads_opt} --uwsgi-socket {socket} --module {app} "
           "--die-on-term --need-app --disable-logging --listen 1024",
}
IMPLEMENTATIONS = (OURS, UVICORN, GRANIAN, GRANIAN_WSGI, UWSGI, GUNICORN)  # row order
# Modules an implementation needs, checked before anything starts.
IMPLEMENTATION_NEEDS: dict[str, tuple[str, ...]] = {
    GUNICORN: ("gunicorn",),
    UVICORN: ("uvicorn", "uvloop", "httptools"),
    GRANIAN: ("granian", "uvloop"),
    GRANIAN_WSGI: ("granian",),
    UWSGI: ("pyuwsgi",),
}
# The protocol nginx speaks to an implementation: "http" (proxy_pass over upstream keep-alive)
# unless listed here.  uWSGI gets its native protocol (uwsgi_pass), as the issue 15 figures did
# and as uWSGI is deployed; its http-socket mode is the slower one.
UPSTREAM_PROTOCOL: dict[str, str] = {UWSGI: "uwsgi"}


@dataclass(frozen=True)
class ServerClass:
    """A worker class as named by ``-k``.

    ``gunicorn`` is gunicorn's name for the equivalent class (the baseline each ratio is taken
    against), or None where gunicorn 27 has none (it dropped eventlet; its asyncio-flavoured
    worker, ``asgi``, serves ASGI, not WSGI).  ``needs`` lists modules that must be importable
    for the class to run at all, checked before anything starts.
    """

    name: str
    threads: int = 1
    gunicorn: str | None = None
    needs: tuple[str, ...] = ()
    interface: str = "wsgi"        # which of a scenario's apps the class runs
    peers: tuple[str, ...] = ()    # other implementations that serve this class (ASGI servers)
    ours: bool = True              # False: a class of peers only (wsgi-peers)
    # Classes whose cells the report compares ours with besides this class's own peers: the
    # WSGI peers, measured once for all WSGI classes.
    peer_classes: tuple[str, ...] = ()

    def kclass(self, impl: str) -> str | None:
        """The ``-k`` value for ``impl``, or None if that implementation lacks the class."""
        if impl == OURS:
            return self.name if self.ours else None
        if impl == GUNICORN:
            return self.gunicorn
        return self.name if impl in self.peers else None


# The WSGI peers in two configurations (threads per worker): 1 is their fastest for small
# requests (measured: uWSGI processes-only gave 2.3x the req/s of 32 threads on hello, granian
# with 1 blocking thread more than with 4, 32 or its default 256); 32 holds all 64 connections of
# hello and post at once over 2 workers, and overlaps sleep50's waits as our async classes do.
WSGI_PEERS = "wsgi-peers"
WSGI_PEERS_THREADED = "wsgi-peers-32t"
_WSGI_PEER_CLASSES = (WSGI_PEERS, WSGI_PEERS_THREADED)

SERVER_CLASSES: dict[str, ServerClass] = {c.name: c for c in (
    ServerClass("sync", gunicorn="sync", peer_classes=_WSGI_PEER_CLASSES),
    ServerClass("gthread", threads=4, gunicorn="gthread", peer_classes=_WSGI_PEER_CLASSES),
    # Async classes: selectable now, runnable once our server has them and the library is
    # installed (a missing library is reported before the run starts).
    ServerClass("gevent", gunicorn="gevent", needs=("gevent",),
                peer_classes=_WSGI_PEER_CLASSES),
    ServerClass("eventlet", gunicorn=None, needs=("eventlet",),
                peer_classes=_WSGI_PEER_CLASSES),
    ServerClass("tornado", gunicorn="tornado", needs=("tornado",),
                peer_classes=_WSGI_PEER_CLASSES),
    ServerClass("asyncio", gunicorn=None, peer_classes=_WSGI_PEER_CLASSES),
    # ASGI: ours is `-k asgi` (the asyncio class with --interface asgi), gunicorn 27 has a
    # class of the same name, and uvicorn and granian are ASGI servers of their own.
    ServerClass("asgi", gunicorn="asgi", interface="asgi", peers=(UVICORN, GRANIAN)),
    # The WSGI peers: native-code servers with no worker classes of their own, run once per
    # scenario and compared with every WSGI class of ours.
    ServerClass(WSGI_PEERS, threads=1, ours=False, peers=(GRANIAN_WSGI, UWSGI)),
    ServerClass(WSGI_PEERS_THREADED, threads=32, ours=False, peers=(GRANIAN_WSGI, UWSGI)),
)}
DEFAULT_SERVER_CLASSES = ("sync", "gthread", WSGI_PEERS, WSGI_PEERS_THREADED)


# ---------------------------------------------------------------------------------------------
# Scenarios.

POST_BODY_BYTES = 1024  # passed to lua/post.lua through the environment: one source of truth


@dataclass(frozen=True)
class Scenario:
    """One workload: the app the server runs and how wrk drives it."""

    name: str
    app: str                  # MODULE:CALLABLE given to the server
    connections: int          # wrk -c
    description: str
    lua: str | None = None    # a script in bench/lua/ that shapes the requests
    method: str = "GET"       # for the smoke check made before measuring
    expect_body: bytes | None = None  # the exact body the smoke check must see, when known
    asgi_app: str = ""        # the same workload as an ASGI app, for the asgi class

    def app_for(self, interface: str) -> str:
        if interface == "asgi":
            if not self.asgi_app:
                raise ValueError(f"scenario {self.name!r} has no ASGI app")
            return self.asgi_app
        return self.app

    def request_body(self) -> bytes | None:
        return b"x" * POST_BODY_BYTES if self.method == "POST" else None


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("hello", "bench.apps:hello", 64, "hello world, c=64",
             expect_body=b"Hello, world!\n", asgi_app="bench.apps:asgi_hello"),
    Scenario("sleep50", "bench.apps:sleep50", 100,
             "50 ms I/O-bound app, c=100 (ideal: 2,000 req/s)",
             asgi_app="bench.apps:asgi_sleep50"),
    Scenario("onemeg", "bench.apps:onemeg", 16, "1 MiB response, c=16",
             asgi_app="bench.apps:asgi_onemeg"),
    Scenario("post", "bench.apps:post_echo", 64,
             f"{POST_BODY_BYTES}-byte POSTs over upstream keep-alive, c=64",
             lua="post.lua", method="POST", expect_body=f"{POST_BODY_BYTES}\n".encode(),
             asgi_app="bench.apps:asgi_post_echo"),
)}
DEFAULT_SCENARIOS = tuple(SCENARIOS)


# ---------------------------------------------------------------------------------------------
# Cells.


@dataclass(frozen=True)
class Cell:
    scenario: Scenario
    server_class: ServerClass
    impl: str

    @property
    def key(self) -> str:
        return f"{self.scenario.name}/{self.server_class.name}/{self.impl}"

    @property
    def baseline_key(self) -> str:
        return f"{self.scenario.name}/{self.server_class.name}/{GUNICORN}"


def build_cells(server_tokens: list[str], scenario_names: list[str]) -> list[Cell]:
    """Expand ``--servers`` and ``--scenarios`` into cells, ours next to its peers.

    A server token is a class name (``sync``: every implementation that has the class; for
    ``asgi`` that is ours, uvicorn, granian and gunicorn; for ``wsgi-peers`` and
    ``wsgi-peers-32t`` granian-wsgi and uwsgi) or ``IMPL:CLASS`` (``gunicorn:sync``,
    ``uvicorn:asgi``, ``uwsgi:wsgi-peers``: that one only).  Order: scenario, then class, then
    implementation, so the two sides of each comparison run back to back.
    """
    pairs: list[tuple[ServerClass, str]] = []
    for token in server_tokens:
        impl, _, name = token.rpartition(":")
        if name not in SERVER_CLASSES:
            raise ValueError(f"unknown worker class {name!r}; known: {', '.join(SERVER_CLASSES)}")
        if impl and impl not in IMPLEMENTATIONS:
            known = ", ".join(IMPLEMENTATIONS)
            raise ValueError(f"unknown implementation {impl!r}; known: {known}")
        cls = SERVER_CLASSES[name]
        for candidate in (impl,) if impl else IMPLEMENTATIONS:
            if cls.kclass(candidate) is None:
                if impl:  # asked for explicitly: say why it cannot run
                    raise ValueError(f"{candidate} has no {name!r} worker class")
                continue
            if (cls, candidate) not in pairs:
                pairs.append((cls, candidate))
    cells = []
    for scenario_name in scenario_names:
        if scenario_name not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario_name!r}; known: {', '.join(SCENARIOS)}")
        cells += [Cell(SCENARIOS[scenario_name], cls, impl) for cls, impl in pairs]
    return cells


PLACEHOLDERS = ("python", "workers", "worker_class", "threads", "threads_opt", "socket",
                "keep_alive", "app")


def check_template(template: str) -> None:
    """Fail early, before anything starts, on a template that cannot be filled."""
    try:
        argv = shlex.split(template.format(**dict.fromkeys(PLACEHOLDERS, "x")))
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"bad command template {template!r}: {exc!r}; placeholders are "
                         + " ".join("{" + name + "}" for name in PLACEHOLDERS)) from None
    if not argv:
        raise ValueError("empty command template")


def server_command(template: str, cell: Cell, *, python: str, workers: int, socket: Path,
                   keep_alive: int) -> list[str]:
    """Fill an implementation's template for one cell and split it into argv."""
    kclass = cell.server_class.kclass(cell.impl)
    assert kclass is not None  # build_cells never makes such a cell
    threads = cell.server_class.threads
    values = {
        "python": python, "workers": str(workers), "worker_class": kclass,
        "threads": str(threads), "socket": str(socket), "keep_alive": str(keep_alive),
        "app": cell.scenario.app_for(cell.server_class.interface),
    }
    quoted = {key: shlex.quote(value) for key, value in values.items()}
    # Only classes with a thread pool get --threads, so templates work for classes whose
    # servers reject or ignore the flag.
    quoted["threads_opt"] = f"--threads {threads}" if threads > 1 else ""
    return shlex.split(template.format(**quoted))
