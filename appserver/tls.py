"""TLS on the server's own listeners: the ``ssl.SSLContext`` built from gunicorn's TLS settings.

One job: turn ``certfile``, ``keyfile``, ``ca_certs``, ``cert_reqs`` and ``ciphers`` into a
context, as gunicorn's ``default_ssl_context_factory`` does (``create_default_context`` for
client authentication, the chain and key, the verify mode, the cipher list), and let the
``ssl_context`` hook replace or adjust it.  The only I/O is loading those files.

The master builds the context once at start-up (and on HUP) only to check it -- so a missing file,
a key that does not match its certificate or a cipher list OpenSSL rejects is an error that
names the setting and the file before any worker starts, not a crash loop.  Each worker builds
its own after its class patched the standard library (gevent's and eventlet's green
``SSLContext``) and before it gives up root (a key readable by root only still loads).

The worker classes wrap what they accept (the byte pump) or hand the context to their loop
(asyncio, Tornado); they share :func:`wrap` and :func:`is_tls`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .config import ServerConfig

if TYPE_CHECKING:
    import socket
    import ssl

    from .hooks import ServerHooks

# ssl_version values that mean gunicorn's default (ssl.PROTOCOL_TLS); any other is warned about.
_DEFAULT_VERSIONS = {2, "2", "TLS", "PROTOCOL_TLS", "SSLv23", "PROTOCOL_SSLv23"}


class TLSError(Exception):
    """The TLS settings cannot make a context; the message names the setting and the file."""


def enabled(config: ServerConfig) -> bool:
    """gunicorn's ``is_ssl``: a certfile (or keyfile) turns TLS on for every listener."""
    return bool(config.certfile or config.keyfile)


def warnings(config: ServerConfig) -> list[str]:
    """What to tell the operator about these settings (nothing is refused here)."""
    found = []
    if config.ssl_version not in _DEFAULT_VERSIONS:
        found.append(f"ssl_version = {config.ssl_version!r} is ignored: the setting is "
                     f"deprecated and ignored by gunicorn 27 too; set context.minimum_version "
                     f"in an ssl_context hook instead")
    if enabled(config) and config.proxy_protocol != "off":
        found.append("proxy_protocol with TLS: the PROXY header is read inside the TLS stream, "
                     "after the handshake, as gunicorn does; a proxy that sends it before the "
                     "handshake (HAProxy's send-proxy) cannot connect")
    return found


def _readable(setting: str, path: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise TLSError(f"{setting} {path}: cannot read it: {exc.strerror}") from None
    if os.path.isdir(path):
        raise TLSError(f"{setting} {path}: is a directory, not a PEM file")


def _no_passphrase() -> str:
    raise TLSError("encrypted")


def default_context(config: ServerConfig) -> ssl.SSLContext:
    """gunicorn's default context for these settings; TLSError naming what is wrong."""
    import ssl  # here: a green worker class must patch it first (see the module notes)

    certfile, keyfile, ca_certs = config.certfile, config.keyfile, config.ca_certs
    if not certfile:
        raise TLSError("keyfile without certfile: set certfile too")
    for setting, path in (("certfile", certfile), ("keyfile", keyfile), ("ca_certs", ca_certs)):
        if path:
            _readable(setting, path)
    try:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca_certs)
    except (ssl.SSLError, ValueError) as exc:
        raise TLSError(f"ca_certs {ca_certs}: no CA certificate could be loaded from it "
                       f"({_reason(exc)})") from None
    key_text = f"keyfile {keyfile}" if keyfile else f"certfile {certfile} (no keyfile set)"
    try:
        context.load_cert_chain(certfile, keyfile, password=_no_passphrase)
    except TLSError:
        raise TLSError(f"{key_text}: the private key is protected by a passphrase, which the "
                       f"server cannot ask for; store it decrypted (readable by root only) "
                       f"or load it in an ssl_context hook") from None
    except ssl.SSLError as exc:
        reason = _reason(exc)
        if "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in reason:
            raise TLSError(f"{key_text} does not match certfile {certfile} (the private key "
                           f"is not the certificate's)") from None
        if keyfile:
            raise TLSError(f"certfile {certfile} / keyfile {keyfile}: cannot load the "
                           f"certificate and its key: {reason}") from None
        raise TLSError(f"certfile {certfile}: cannot load a certificate and a private key "
                       f"from it ({reason}); set keyfile when the key is in its own file") from None
    context.verify_mode = ssl.VerifyMode(config.cert_reqs)
    if config.ciphers:
        try:
            context.set_ciphers(config.ciphers)
        except ssl.SSLError as exc:
            raise TLSError(f"ciphers {config.ciphers!r}: OpenSSL selects no cipher from this "
                           f"list ({_reason(exc)})") from None
    return context


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason or exc)


def build_context(config: ServerConfig, hooks: ServerHooks) -> ssl.SSLContext | None:
    """The context of the listeners (None without TLS): the ssl_context hook's, if set,
    given a factory of the default one."""
    import ssl
    if not enabled(config):
        return None

    def factory() -> ssl.SSLContext:
        return default_context(config)

    context = hooks.ssl_context(config, factory)
    if not isinstance(context, ssl.SSLContext):
        raise TLSError(f"the ssl_context hook returned {context!r}, not an ssl.SSLContext")
    return context


def check(config: ServerConfig, hooks: ServerHooks) -> None:
    """In the master, at start-up and on HUP: build the context once, so that every problem is
    reported there; TLSError otherwise."""
    try:
        build_context(config, hooks)
    except TLSError:
        raise
    except Exception as exc:  # the ssl_context hook's own error
        raise TLSError(f"the ssl_context hook raised {type(exc).__name__}: {exc}") from exc


def wrap(context: ssl.SSLContext, sock: socket.socket, config: ServerConfig) -> ssl.SSLSocket:
    """An accepted connection as the server's side of TLS.  The handshake is left to the first
    read (the pump does it explicitly, bounded by --header-timeout), so wrapping never waits."""
    return context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False,
                               suppress_ragged_eofs=config.suppress_ragged_eofs)


def is_tls(sock: object) -> bool:
    """A TLS socket: the standard library's, gevent's or eventlet's (not a plain one)."""
    return callable(getattr(sock, "pending", None)) and callable(getattr(sock, "cipher", None))

