"""WebSockets for WSGI apps: a sans-I/O session over wsproto, the handshake, and the blocking
``environ['wsgi.websocket']`` object used by the thread-based workers."""

from .handshake import HandshakeError, accept_response, check_upgrade
from .session import WebSocketSession

__all__ = ["HandshakeError", "WebSocketSession", "accept_response", "check_upgrade"]
