"""Sans-I/O HTTP/1.1: bytes in, events out (parser); response heads and framing out (response)."""

from .events import END_OF_MESSAGE, NEED_DATA, Body, EndOfMessage, Event, ProtocolError, RequestHead
from .parser import RequestParser

__all__ = ["END_OF_MESSAGE", "NEED_DATA", "Body", "EndOfMessage", "Event", "ProtocolError",
           "RequestHead", "RequestParser"]
