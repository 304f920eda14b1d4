"""The exception an ASGI ``send()`` raises on a connection the client has closed.

Its own module because it subclasses ``OSError`` (ASGI HTTP spec 2.4: Starlette turns an OSError
from ``send()`` into its ClientDisconnect), which mypyc cannot compile: this module stays Python
in the compiled build (appserver/_build.py), and the compiled modules import it.
"""

from __future__ import annotations


class ClientDisconnected(OSError):
    """``send()`` on a connection the client has closed (ASGI HTTP spec 2.4)."""
