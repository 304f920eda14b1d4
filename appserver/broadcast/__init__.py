"""Rooms across processes for WebSocket apps: publish to a room, receive what any worker
published (docs/broadcast.md).

::

    from appserver.broadcast import Broadcast, PublishError
    BROADCAST = Broadcast.from_environ()     # Redis if APPSERVER_REDIS_URL is set; connects lazily

    # WSGI (gthread threads, gevent/eventlet greenlets): a sender thread per WebSocket
    with BROADCAST.subscribe("lobby") as sub:
        threading.Thread(target=lambda: [ws.send(e.data) for e in sub if e.type == "message"]).start()
        while (text := ws.receive()) is not None:
            BROADCAST.publish("lobby", text)          # raises PublishError
    # ASGI: ``async with BROADCAST.subscribe_async(room) as sub: async for event in sub`` and
    # ``await BROADCAST.publish_async(room, text)``.

What it promises
----------------
* **At most once.**  A message reaches the subscriptions that exist when it is dispatched, in
  every connected process, once.  Nothing is stored: a process whose link to Redis is down misses
  what is published meanwhile -- its subscriptions get a ``lost`` event when the link goes and a
  ``restored`` event when it is back, so the gap is never silent.
* **Publishing fails loudly.**  ``publish`` returns once Redis accepted the message, or raises
  :class:`PublishError`; it never drops a message without telling the publisher.
* **One order per room.**  All subscriptions of a room see its messages in the same order, which
  keeps each publisher's order (a publisher that waits for ``publish`` to return).
* **A slow consumer cannot hold up the others.**  Each subscription has a bounded queue
  (``queue_size``, 256 by default).  When it is full the subscription ends -- ``get()`` returns
  None with ``close_code`` 1013 (Try Again Later) -- and the app closes that WebSocket with the
  same code; no other subscription waits, and none gets a gap.
* **One Redis subscription per worker process**, made on first use in that process (after the
  fork, never in the master); reconnects by itself, with waits doubling up to 5 s, and logs both
  the loss and the return (logger ``appserver.broadcast``).
"""

from .api import Broadcast
from .backends import Backend, MemoryBackend, PublishError
from .hub import OVERFLOW, AsyncSubscription, Event, Subscription

__all__ = ["OVERFLOW", "AsyncSubscription", "Backend", "Broadcast", "Event", "MemoryBackend",
           "PublishError", "Subscription"]
