"""gunicorn's TLS settings on the server's own listeners (certfile, keyfile, ca_certs, cert_reqs,
ciphers, ssl_version, the ssl_context hook), on every worker class, next to gunicorn 27.

Certificates are made at test time with the openssl command: a CA, a server certificate for
127.0.0.1 signed by it, a client certificate signed by it, and an unrelated key.  Clients are the
standard library's (``ssl``, ``http.client``) and ``websockets``, verifying the server against
the CA; the server is the real ``appserver serve``.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest

from ..server.harness import HERE, Gunicorn, Launcher, Server, free_port, listening, wait_for
from .conftest import appserver_run, next_run_dir

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")

ALL_CLASSES = ["sync", "gthread", "gevent", "eventlet", "tornado", "asyncio"]
# The classes whose TLS paths differ: epoll head gathering (sync, gthread), the asyncio loop's
# SSL transport, Tornado's; gevent stands for both green classes.
HEAVY_CLASSES = ["sync", "gthread", "gevent", "eventlet", "asyncio", "tornado"]

APP_SOURCE = '''
import json, os, time

def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/slow":
        time.sleep(1)
    if path == "/ws":
        ws = environ["wsgi.websocket"]
        while True:
            message = ws.receive()
            if message is None:
                return []
            ws.send(message)
    if path == "/echo":
        body = environ["wsgi.input"].read()
    elif path == "/environ":
        body = json.dumps({k: v for k, v in environ.items() if isinstance(v, str)}).encode()
    else:
        body = f"pid={os.getpid()}".encode()
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''

HOOK_CONFIG = '''
import ssl

def ssl_context(conf, default_ssl_context_factory):
    context = default_ssl_context_factory()
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    with open("hook-called", "a") as fh:
        fh.write(f"{conf.certfile}\\n")
    return context
'''


# ---- certificates ---------------------------------------------------------------------------


class Certs:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.ca = root / "ca.pem"
        self.cert = root / "server.pem"
        self.key = root / "server.key"
        self.combined = root / "combined.pem"
        self.client_cert = root / "client.pem"
        self.client_key = root / "client.key"
        self.other_key = root / "other.key"

    def client_context(self, *, with_cert: bool = False) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        if with_cert:
            context.load_cert_chain(str(self.client_cert), str(self.client_key))
        return context

    def server_der(self) -> bytes:
        return ssl.PEM_cert_to_DER_cert(self.cert.read_text())


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    root = tmp_path_factory.mktemp("tls")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=appserver test CA", cwd=root)
    (root / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, cn in (("server", "127.0.0.1"), ("client", "test client")):
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj",
                 f"/CN={cn}", cwd=root)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-out", f"{name}.pem",
                 *(["-extfile", "san.ext"] if name == "server" else []), cwd=root)
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-out", "other.key", cwd=root)
    _openssl("pkey", "-in", "server.key", "-aes256", "-passout", "pass:secret", "-out",
             "encrypted.key", cwd=root)
    certs = Certs(root)
    certs.combined.write_text(certs.cert.read_text() + certs.key.read_text())
    return certs


# ---- helpers --------------------------------------------------------------------------------


def start(launcher: Launcher, certs: Certs, worker_class: str, *options: str,
          workers: int = 1, config: str | None = None) -> Server:
    """A TLS server on a free TCP port with the test app; ready once a TLS request succeeds."""
    run = next_run_dir(launcher)
    (run / "tlsapp.py").write_text(APP_SOURCE)
    if config is not None:
        (run / "gunicorn.conf.py").write_text(config)
    server = launcher.start("-k", worker_class, "--certfile", str(certs.cert), "--keyfile",
                            str(certs.key), "--ca-certs", str(certs.ca), *options,
                            app="tlsapp:app", bind="tcp", workers=workers, wait=False)
    server.wait_workers(workers)
    wait_for(lambda: _answers(server, certs), 15, "the server to answer over TLS",
             details=server.tail)
    return server


def _answers(server: Server, certs: Certs) -> bool:
    try:
        return get(server, certs, "/")[0] == 200
    except OSError:
        return False


def connection(server: Server, certs: Certs, **kwargs: object) -> http.client.HTTPSConnection:
    assert server.port is not None
    context = kwargs.pop("context", None) or certs.client_context()
    return http.client.HTTPSConnection("127.0.0.1", server.port, timeout=10,
                                       context=context)  # type: ignore[arg-type]


def get(server: Server, certs: Certs, path: str) -> tuple[int, bytes]:
    conn = connection(server, certs)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def peer_der(port: int, context: ssl.SSLContext) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


# ---- every class: HTTPS, the certificate, the scheme, keep-alive -----------------------------


@pytest.mark.parametrize("worker_class", ALL_CLASSES)
def test_https_get_and_keep_alive(launcher: Launcher, certs: Certs, worker_class: str) -> None:
    server = start(launcher, certs, worker_class)
    assert server.port is not None
    assert fingerprint(peer_der(server.port, certs.client_context())) == \
        fingerprint(certs.server_der())
    conn = connection(server, certs)
    try:
        conn.request("GET", "/environ")
        response = conn.getresponse()
        environ = json.loads(response.read())
        assert response.status == 200
        assert environ["wsgi.url_scheme"] == "https"
        assert environ["REMOTE_ADDR"] == "127.0.0.1"
        assert environ["SERVER_PORT"] == str(server.port)
        assert "HTTPS" not in environ  # gunicorn sets no HTTPS variable either
        first = conn.sock
        for _ in range(2):
            conn.request("GET", "/")
            response = conn.getresponse()
            assert response.status == 200 and response.read().startswith(b"pid=")
            # sync closes after every response (as gunicorn's does); the others keep alive.
            if worker_class == "sync":
                assert response.getheader("Connection") == "close"
            else:
                assert conn.sock is first
    finally:
        conn.close()


# ---- the heavier cases, on the classes whose TLS paths differ ---------------------------------


@pytest.mark.parametrize("worker_class", HEAVY_CLASSES)
def test_large_bodies_pipelining_websocket_and_plain_http(launcher: Launcher, certs: Certs,
                                                          worker_class: str) -> None:
    server = start(launcher, certs, worker_class)
    assert server.port is not None
    context = certs.client_context()
    body = bytes(range(256)) * 4096  # 1 MiB
    conn = connection(server, certs)
    try:
        conn.request("POST", "/echo", body=body, headers={"Content-Type": "application/x"})
        response = conn.getresponse()
        assert response.status == 200
        assert response.read() == body
    finally:
        conn.close()

    # Two pipelined requests in one TLS record: both answered, in order.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\nGET /b HTTP/1.1\r\nHost: t\r\n"
                    b"Connection: close\r\n\r\n")
        received = b""
        while chunk := tls.recv(65536):
            received += chunk
    expected = 1 if worker_class == "sync" else 2  # sync answers one and closes, as gunicorn
    assert received.count(b"HTTP/1.1 200 OK") == expected, received

    # A plain-HTTP client on the TLS port: refused, and the worker lives on.  A client that
    # connects and never starts the handshake holds nothing: the next client is served at once.
    pid_before = get(server, certs, "/")[1]
    stalled = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    started = time.monotonic()
    assert get(server, certs, "/")[1] == pid_before
    assert time.monotonic() - started < 2
    stalled.close()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        raw.settimeout(5)
        try:
            answer = raw.recv(4096)
        except (ConnectionResetError, TimeoutError):
            answer = b""
        assert b"200 OK" not in answer
    status, pid_after = get(server, certs, "/")
    assert status == 200 and pid_after == pid_before

    # wss: a WebSocket over TLS (sync refuses upgrades, TLS or not).
    if worker_class != "sync":
        from websockets.sync.client import connect

        for attempt in (1, 2):
            try:
                ws = connect(f"wss://127.0.0.1:{server.port}/ws", ssl=context, open_timeout=10,
                             close_timeout=5, max_size=None)
            except Exception as exc:  # noqa: BLE001 - checked below, re-raised unless it is that
                # The websockets sync client reads in a thread of its own while the caller
                # writes, on one SSLSocket; on a loaded machine OpenSSL then sometimes fails the
                # client's own first write with "internal error" before any byte reaches the
                # server.  Another connection is a fair second try; a server fault would repeat.
                chain = [exc, exc.__cause__, exc.__context__]
                if attempt == 2 or not any(isinstance(e, ssl.SSLError) and "internal error"
                                           in str(e) for e in chain):
                    raise
                continue
            break
        with ws:
            ws.send("hello over tls")
            assert ws.recv(timeout=10) == "hello over tls"
            ws.send(body)
            assert ws.recv(timeout=10) == body

    # Graceful stop over TLS: a request in flight is answered, then the master exits 0.
    results: list[tuple[int, bytes]] = []
    thread = threading.Thread(target=lambda: results.append(get(server, certs, "/slow")))
    thread.start()
    time.sleep(0.4)
    server.signal(signal.SIGTERM)
    thread.join(15)
    assert results and results[0][0] == 200
    assert server.wait_exit(20) == 0


@pytest.mark.parametrize("worker_class", ["gthread", "asyncio"])
def test_client_certificates_required(launcher: Launcher, certs: Certs, worker_class: str) -> None:
    """ca_certs + cert_reqs=2: a client without a certificate is refused, one with a
    certificate signed by the CA is served."""
    run = next_run_dir(launcher)
    (run / "tlsapp.py").write_text(APP_SOURCE)
    server = launcher.start("-k", worker_class, "--certfile", str(certs.cert), "--keyfile",
                            str(certs.key), "--ca-certs", str(certs.ca), "--cert-reqs", "2",
                            app="tlsapp:app", bind="tcp", workers=1, wait=False)
    server.wait_workers(1)
    assert server.port is not None
    wait_for(lambda: listening(server.port or 0), 10, "the server to listen")
    conn = connection(server, certs, context=certs.client_context(with_cert=True))
    conn.request("GET", "/")
    assert conn.getresponse().status == 200
    conn.close()
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError,
                        http.client.RemoteDisconnected)):
        conn = connection(server, certs)
        conn.request("GET", "/")
        conn.getresponse().read()
    conn = connection(server, certs, context=certs.client_context(with_cert=True))
    conn.request("GET", "/")
    assert conn.getresponse().status == 200
    conn.close()


def test_ssl_context_hook_from_gunicorn_conf(launcher: Launcher, certs: Certs) -> None:
    """gunicorn's ssl_context(conf, default_ssl_context_factory): its context is the one used
    (TLS 1.3 only here), and ``conf`` reads the settings."""
    server = start(launcher, certs, "gthread", workers=2, config=HOOK_CONFIG)
    assert server.port is not None
    calls = (server.workdir / "hook-called").read_text().splitlines()
    assert calls == [str(certs.cert)] * 3  # the master's check, then once per worker
    old = certs.client_context()
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        peer_der(server.port, old)
    assert get(server, certs, "/")[0] == 200


# ---- start-up errors ------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "message"), [
    (["--certfile", "{cert}", "--keyfile", "{other}"],
     r"keyfile \S+other.key does not match certfile \S+server.pem"),
    (["--certfile", "{root}/missing.pem", "--keyfile", "{key}"],
     r"certfile \S+missing.pem: cannot read it: No such file"),
    (["--keyfile", "{key}"], r"keyfile without a certfile"),
    (["--certfile", "{cert}"], r"certfile \S+server.pem: cannot load a certificate and a "
     r"private key from it .*set keyfile"),
    (["--certfile", "{cert}", "--keyfile", "{key}", "--ciphers", "NO-SUCH-CIPHER"],
     r"ciphers 'NO-SUCH-CIPHER': OpenSSL selects no cipher"),
    (["--certfile", "{key}", "--keyfile", "{key}"], r"certfile \S+server.key / keyfile"),
    (["--certfile", "{cert}", "--keyfile", "{root}/encrypted.key"],
     r"keyfile \S+encrypted.key: the private key is protected by a passphrase"),
])
def test_bad_files_are_start_up_errors(launcher: Launcher, certs: Certs, args: list[str],
                                       message: str) -> None:
    run = next_run_dir(launcher)
    argv = [a.format(cert=certs.cert, key=certs.key, other=certs.other_key, root=certs.root)
            for a in args]
    result = appserver_run(*argv, "-b", f"127.0.0.1:{free_port()}", "-w", "1",
                           "apps:hello", cwd=run, env={"PYTHONPATH": str(HERE)}, timeout=20)
    assert result.returncode != 0
    assert re.search(message, result.stderr), result.stderr
    assert "Traceback" not in result.stderr


def test_certfile_holding_the_key_and_ssl_version_warning(launcher: Launcher,
                                                          certs: Certs) -> None:
    """gunicorn's rule: the key may sit in the certfile.  ssl_version is ignored with a
    warning, as gunicorn 27 does."""
    run = next_run_dir(launcher)
    (run / "tlsapp.py").write_text(APP_SOURCE)
    server = launcher.start("-k", "sync", "--certfile", str(certs.combined), "--ssl-version",
                            "TLSv1_2", app="tlsapp:app", bind="tcp", workers=1, wait=False)
    server.wait_workers(1)
    wait_for(lambda: _answers(server, certs), 15, "the server to answer over TLS",
             details=server.tail)
    server.wait_log(r"ssl_version = 'TLSv1_2' is ignored")


def test_check_config_reports_a_bad_key(launcher: Launcher, certs: Certs) -> None:
    run = next_run_dir(launcher)
    result = appserver_run("--check-config", "--certfile", str(certs.cert), "--keyfile",
                           str(certs.other_key), "apps:hello", cwd=run,
                           env={"PYTHONPATH": str(HERE)})
    assert result.returncode != 0
    assert "does not match certfile" in result.stderr


# ---- gunicorn 27, the reference ---------------------------------------------------------------


def test_same_certificate_and_scheme_as_gunicorn(launcher: Launcher, gunicorn: Gunicorn,
                                                 certs: Certs, workdir: Path) -> None:
    ours = start(launcher, certs, "sync")
    assert ours.port is not None
    (workdir / "tlsapp.py").write_text(APP_SOURCE)
    port = free_port()
    proc = gunicorn.start("-w", "1", "-b", f"127.0.0.1:{port}", "--certfile", str(certs.cert),
                          "--keyfile", str(certs.key), "tlsapp:app", cwd=workdir,
                          env={"PYTHONPATH": str(workdir)})
    wait_for(lambda: listening(port), 20, "gunicorn to listen")
    context = certs.client_context()
    assert peer_der(ours.port, context) == peer_der(port, context) == certs.server_der()

    def environ_of(p: int) -> dict[str, str]:
        deadline = time.monotonic() + 10
        while True:
            try:
                conn = http.client.HTTPSConnection("127.0.0.1", p, timeout=10, context=context)
                conn.request("GET", "/environ")
                data: dict[str, str] = json.loads(conn.getresponse().read())
                conn.close()
                return data
            except (OSError, ValueError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    mine, theirs = environ_of(ours.port), environ_of(port)
    assert mine["wsgi.url_scheme"] == theirs["wsgi.url_scheme"] == "https"
    assert ("HTTPS" in mine) == ("HTTPS" in theirs)
    assert gunicorn.stop(proc, 20) == 0


@pytest.mark.parametrize("worker_class", ["gthread", "asyncio"])
def test_unix_socket_listener_speaks_tls_too(launcher: Launcher, certs: Certs,
                                             worker_class: str) -> None:
    """As gunicorn: certfile turns TLS on for every listener, unix sockets included."""
    run = next_run_dir(launcher)
    (run / "tlsapp.py").write_text(APP_SOURCE)
    server = launcher.start("-k", worker_class, "--certfile", str(certs.cert), "--keyfile",
                            str(certs.key), app="tlsapp:app", bind="unix", workers=1,
                            wait=False)
    server.wait_workers(1)
    assert server.unix_path is not None
    wait_for(lambda: Path(server.unix_path or "").exists(), 10, "the socket file")
    with socket.socket(socket.AF_UNIX) as raw:
        raw.settimeout(10)
        raw.connect(server.unix_path)
        with certs.client_context().wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(b"GET /environ HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            received = b""
            while chunk := tls.recv(65536):
                received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert json.loads(body)["wsgi.url_scheme"] == "https"
