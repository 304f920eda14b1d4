"""WebSockets for WSGI apps: a sans-I/O session over the ``websockets`` package's protocol, the
handshake, and the ``environ['wsgi.websocket']`` objects the workers hand to apps."""

from .handshake import HandshakeError, accept_response, check_upgrade
from .session import WebSocketSession

__all__ = ["HandshakeError", "WebSocketSession", "accept_response", "check_upgrade"]
