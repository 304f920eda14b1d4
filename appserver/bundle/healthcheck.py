"""Health probe over the server's unix socket: ``python -m appserver.bundle.healthcheck SOCKET PATH``.

The app container's compose health check: the image has no curl, and the server listens on a
unix socket only.  Exits 0 when ``GET PATH`` answers 200 within the timeout, 1 otherwise (with
the reason on stderr).  Standard library only: it runs in the app image, where Jinja may be absent.
"""

from __future__ import annotations

import socket
import sys


def probe(socket_path: str, path: str = "/healthz", timeout: float = 3.0) -> tuple[bool, str]:
    """Send one GET over the unix socket; return (healthy, status line or error)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(socket_path)
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                         f"User-Agent: appserver-healthcheck\r\n\r\n".encode("ascii"))
            head = b""
            while b"\r\n" not in head and len(head) < 4096:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                head += chunk
    except OSError as exc:
        return False, f"{socket_path}: {exc}"
    status = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status.split()
    return len(parts) >= 2 and parts[1] == "200", status or "no response"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not 1 <= len(args) <= 2:
        print("usage: python -m appserver.bundle.healthcheck SOCKET [PATH]", file=sys.stderr)
        return 2
    healthy, detail = probe(args[0], args[1] if len(args) > 1 else "/healthz")
    if not healthy:
        print(f"unhealthy: {detail}", file=sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
