"""Hostile input: a request-smuggling corpus, straight to the app server and through real nginx,
on every worker class.

The corpus is written from RFC 9112 (message syntax and framing), RFC 9110 (fields, Host,
Content-Length) and the published request-smuggling bugs of Python servers: gunicorn
CVE-2024-1135 (Transfer-Encoding lists: ``chunked, chunked``, ``identity``, codings it did not
understand) and CVE-2024-6827 (Transfer-Encoding not validated: TE.CL desync), plus the classic
classes -- Content-Length with Transfer-Encoding, signed, padded or duplicate Content-Length,
Python's lenient ``int()`` (``1_0``, non-ASCII digits), bad chunk sizes, extensions and
terminators, bare LF and CR, control bytes, duplicate Host, absolute URIs, unbounded lines.

Each case names its source and has an expected status per route: ``direct`` (TCP to the app
server, bypassing nginx) and ``nginx`` (the bundle's rendered nginx.conf in front of the server's
unix socket; nginx's own answer, or what the app answers to the request nginx forwards).  After
each case a normal request on a new connection must succeed, and no worker may have died.

Straight to the server, an error response must say ``Connection: close``, be the only response on
the connection (a smuggled request after the bad bytes is never answered), and the server must
close the connection.  Every case whose bytes carry a request after the bad one ends with
``SMUGGLED``, a request for a route the app does not have: a 404 anywhere means it was served.

One stack (server + nginx) per worker class serves the whole module, all started at once: the
server binds the bundle's unix socket (for nginx) and a loopback TCP port (direct).
"""

from __future__ import annotations

import re
import select
import socket
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import httptools
import pytest

from appserver.bundle.localstack import LocalStack, StackError
from appserver.testing.server import children_of, free_port
from appserver.testing.stack import Stack, load_stack_settings
from tests.reliability.common import WORKER_CLASSES, app_for, bundle_tables, selected_classes
from tests.reliability.report import Recorder

REPO = Path(__file__).resolve().parents[2]
APP = "tests.behaviour.app:app"  # /hello answers 200, /echo reads the whole body; others 404
# (-k asgi serves its twin, tests.behaviour.asgi_app:app: common.app_for)
WORKERS = 2

# The limits the stack runs with: nginx's large_client_header_buffers is 4 x 8k and the server's
# limit_request_line and limit_request_field_size are derived from it (8192); 100 fields; 1 MiB.
HEADER_BUFFER = 8192
MAX_BODY = 1 << 20
STACK_SETTINGS = {
    "server": {"workers": WORKERS, "limit_request_fields": 100},
    "nginx": {"worker_processes": 1, "header_buffer_size": "8k", "header_buffers": 4,
              "client_max_body_size": "1m", "access_log": False},
}

H = b"Host: t\r\n"
GET = b"GET /hello HTTP/1.1\r\n"
POST = b"POST /echo HTTP/1.1\r\n" + H
CHUNKED = POST + b"Transfer-Encoding: chunked\r\n\r\n"
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n"
NORMAL = b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"

CLOSED = "closed"  # the connection ended without a response
NO_STATUS_LINE = "no status line"  # an HTTP/0.9 answer: the body alone


@dataclass(frozen=True)
class Stream:
    """Input that goes on (a line that does not end, a body past the limit): ``prefix``, then
    ``filler`` again and again until the peer answers or closes (at most ``cap`` bytes), then
    ``suffix``."""

    prefix: bytes
    filler: bytes
    suffix: bytes = b""
    cap: int = 256 * 1024


Expected = int | str | tuple[int, ...]  # a status, CLOSED, NO_STATUS_LINE; or every response's


@dataclass(frozen=True)
class Case:
    data: bytes | Stream
    direct: Expected      # the expected status straight to the server
    nginx: Expected       # ... and through nginx (the first response only)
    ref: str              # where the rule (or the bug class) comes from
    closes: bool = False  # the server closes the connection after a response that is no error
    sync: Expected | None = None  # straight to the sync class, which never keeps alive


def _c(data: bytes | Stream, direct: Expected, nginx: Expected, ref: str, closes: bool = False,
       sync: Expected | None = None) -> Case:
    return Case(data, direct, nginx, ref, closes, sync)


CASES: dict[str, Case] = {
    # ---- Content-Length with Transfer-Encoding (CL.TE / TE.CL desync) -------------------------
    "CL then TE": _c(POST + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                     + SMUGGLED, 400, 400, "RFC 9112 §6.1, §6.3(3); CVE-2024-6827"),
    "TE then CL": _c(POST + b"Transfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n"
                     + SMUGGLED, 400, 400, "RFC 9112 §6.1, §6.3(3); CVE-2024-6827"),
    "CL with TE: xchunked": _c(POST + b"Content-Length: 5\r\nTransfer-Encoding: xchunked\r\n\r\n"
                               b"hello" + SMUGGLED, 400, 501, "RFC 9112 §6.3(3), §6.1"),
    # ---- Transfer-Encoding variants -----------------------------------------------------------
    "TE chunked, chunked": _c(POST + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"
                              + SMUGGLED, 400, 501, "RFC 9112 §6.1 (chunked once); CVE-2024-1135"),
    "TE chunked in two fields": _c(POST + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: "
                                   b"chunked\r\n\r\n0\r\n\r\n" + SMUGGLED, 400, 400,
                                   "RFC 9112 §6.1; CVE-2024-1135"),
    "TE chunked not last": _c(POST + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n" + SMUGGLED,
                              400, 501, "RFC 9112 §6.3(4)"),
    "TE identity, chunked": _c(POST + b"Transfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n"
                               + SMUGGLED, 501, 501, "RFC 9112 §6.1 (identity retired); CVE-2024-1135"),
    "TE gzip, chunked (unknown coding)": _c(POST + b"Transfer-Encoding: gzip, chunked\r\n\r\n"
                                            b"0\r\n\r\n" + SMUGGLED, 501, 501, "RFC 9112 §6.1"),
    "TE gzip alone": _c(POST + b"Transfer-Encoding: gzip\r\n\r\nhello" + SMUGGLED, 501, 501,
                        "RFC 9112 §6.1, §6.3(4)"),
    "TE xchunked": _c(POST + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + SMUGGLED, 501, 501,
                      "RFC 9112 §6.1; CVE-2024-6827"),
    "TE empty": _c(POST + b"Transfer-Encoding: \r\n\r\n0\r\n\r\n" + SMUGGLED, 400, 501,
                   "RFC 9112 §6.1 (1#transfer-coding)"),
    "TE with a VT after chunked": _c(POST + b"Transfer-Encoding: chunked\x0b\r\n\r\n0\r\n\r\n"
                                     + SMUGGLED, 400, 501, "RFC 9110 §5.5 (no CTL); CVE-2024-6827"),
    "TE name with space before colon": _c(POST + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n"
                                          + SMUGGLED, 400, 400, "RFC 9112 §5.1"),
    "TE by obs-fold": _c(POST + b"Transfer-Encoding: gzip\r\n chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
                         400, 400, "RFC 9112 §5.2"),
    "TE in HTTP/1.0": _c(b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                         + SMUGGLED, 400, 400, "RFC 9112 §6.1 (faulty framing in 1.0)"),
    "TE Chunked padded with SP (valid)": _c(POST + b"Transfer-Encoding:  Chunked  \r\n\r\n"
                                            b"5\r\nhello\r\n0\r\n\r\n", 200, 200,
                                            "RFC 9112 §5 (OWS), §7 (case-insensitive)"),
    "TE after a tab (valid)": _c(POST + b"Transfer-Encoding:\tchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                                 200, 501, "RFC 9112 §5 (OWS includes HTAB)"),
    "Transfer_Encoding with underscore": _c(POST + b"Transfer_Encoding: chunked\r\n"
                                            b"Content-Length: 5\r\n\r\nhello", 200, 200,
                                            "RFC 9110 §5.1 (a distinct field; CGI name clash)"),
    # ---- Content-Length -----------------------------------------------------------------------
    "CL signed +": _c(POST + b"Content-Length: +5\r\n\r\nhello", 400, 400, "RFC 9110 §8.6 (1*DIGIT)"),
    "CL negative": _c(POST + b"Content-Length: -1\r\n\r\n" + SMUGGLED, 400, 400, "RFC 9110 §8.6"),
    "CL padded with SP (valid)": _c(POST + b"Content-Length:  5  \r\n\r\nhello", 200, 200,
                                    "RFC 9112 §5 (OWS around the value)"),
    "CL padded with HTAB (valid)": _c(POST + b"Content-Length:\t5\t\r\n\r\nhello", 200, 400,
                                      "RFC 9112 §5 (OWS includes HTAB)"),
    "CL padded with FF": _c(POST + b"Content-Length: \x0c5\r\n\r\nhello", 400, 400,
                            "RFC 9110 §5.5, §8.6; Python's str.strip()"),
    "CL padded with VT": _c(POST + b"Content-Length: 5\x0b\r\n\r\nhello", 400, 400,
                            "RFC 9110 §5.5, §8.6; Python's str.strip()"),
    "CL with underscore 1_0": _c(POST + b"Content-Length: 1_0\r\n\r\nhelloworld", 400, 400,
                                 "RFC 9110 §8.6; Python's int()"),
    "CL with a non-ASCII digit": _c(POST + b"Content-Length: \xd9\xa5\r\n\r\nhello", 400, 400,
                                    "RFC 9110 §8.6; Python's int()"),
    "CL hex": _c(POST + b"Content-Length: 0x5\r\n\r\nhello", 400, 400, "RFC 9110 §8.6"),
    "CL two numbers": _c(POST + b"Content-Length: 5 5\r\n\r\nhello", 400, 400, "RFC 9110 §8.6"),
    "CL list of equal values": _c(POST + b"Content-Length: 5, 5\r\n\r\nhello", 400, 400,
                                  "RFC 9110 §8.6 (MAY accept; rejected)"),
    "CL duplicate equal": _c(POST + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400, 400,
                             "RFC 9110 §8.6 (MAY accept; rejected)"),
    "CL duplicate differing": _c(POST + b"Content-Length: 5\r\nContent-Length: 45\r\n\r\nhello"
                                 + SMUGGLED, 400, 400, "RFC 9112 §6.3(5)"),
    "CL empty": _c(POST + b"Content-Length: \r\n\r\n" + SMUGGLED, 400, 400, "RFC 9112 §6.3(5)"),
    "CL leading zeros (valid)": _c(POST + b"Content-Length: 0005\r\n\r\nhello", 200, 200,
                                   "RFC 9110 §8.6 (1*DIGIT)"),
    "CL beyond 64 bits": _c(POST + b"Content-Length: 99999999999999999999999\r\n\r\n", 413, 400,
                            "RFC 9110 §8.6 (overflow)"),
    "CL over the body limit": _c(POST + b"Content-Length: %d\r\n\r\n" % (MAX_BODY + 1), 413, 413,
                                 "RFC 9110 §15.5.14"),
    # ---- chunked bodies -----------------------------------------------------------------------
    "chunk size not hex": _c(CHUNKED + b"zz\r\nhello\r\n0\r\n\r\n" + SMUGGLED, 400, 400,
                             "RFC 9112 §7.1 (1*HEXDIG)"),
    "chunk size 0x": _c(CHUNKED + b"0x5\r\nhello\r\n0\r\n\r\n" + SMUGGLED, 400, 400, "RFC 9112 §7.1"),
    "chunk size signed": _c(CHUNKED + b"-5\r\nhello\r\n0\r\n\r\n" + SMUGGLED, 400, 400,
                            "RFC 9112 §7.1"),
    "chunk size with a space": _c(CHUNKED + b"5 \r\nhello\r\n0\r\n\r\n" + SMUGGLED, 400, 200,
                                  "RFC 9112 §7.1 (no BWS)"),
    "chunk size overflows 64 bits": _c(CHUNKED + b"10000000000000005\r\nhello\r\n0\r\n\r\n"
                                       + SMUGGLED, 400, 400, "RFC 9112 §7.1 (overflow)"),
    "chunk data longer than its size": _c(CHUNKED + b"3\r\nhello\r\n0\r\n\r\n" + SMUGGLED, 400, 400,
                                          "RFC 9112 §7.1"),
    "chunk data ended by bare LF": _c(CHUNKED + b"5\r\nhello\n0\r\n\r\n" + SMUGGLED, 400, 200,
                                      "RFC 9112 §7.1, §2.2"),
    "chunk data ended by bare CR": _c(CHUNKED + b"5\r\nhello\r0\r\n\r\n" + SMUGGLED, 400, 400,
                                      "RFC 9112 §7.1, §2.2"),
    "chunk size line ended by bare LF": _c(CHUNKED + b"5\nhello\r\n0\r\n\r\n" + SMUGGLED, 400, 200,
                                           "RFC 9112 §7.1, §2.2"),
    "last chunk ended by bare LF": _c(CHUNKED + b"5\r\nhello\r\n0\n\r\n" + SMUGGLED, 400, 200,
                                      "RFC 9112 §7.1, §2.2"),
    "chunked body without its last CRLF": _c(CHUNKED + b"5\r\nhello\r\n0\r\n" + SMUGGLED, 400, 200,
                                             "RFC 9112 §7.1 (trailer-section CRLF)"),
    "chunk extension with bare LF": _c(CHUNKED + b"5;a\nb\r\nhello\r\n0\r\n\r\n" + SMUGGLED, 400, 400,
                                       "RFC 9112 §7.1.1, §2.2"),
    "chunk extension with NUL": _c(CHUNKED + b"5;a\x00b\r\nhello\r\n0\r\n\r\n" + SMUGGLED, 400, 200,
                                   "RFC 9112 §7.1.1"),
    "chunk extension unbounded": _c(Stream(CHUNKED + b"5;x=", b"a" * 16384, b"\r\nhello\r\n0\r\n\r\n"),
                                    431, 200, "RFC 9112 §7.1.1 (a server limits extensions)"),
    "chunk extensions (valid)": _c(CHUNKED + b"5;a=b;c=\"d e\"\r\nhello\r\n0;z\r\n\r\n", 200, 200,
                                   "RFC 9112 §7.1.1"),
    "chunk trailer field (valid)": _c(CHUNKED + b"5\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n", 200, 200,
                                      "RFC 9112 §7.1.2"),
    "chunk trailer with bare LF": _c(CHUNKED + b"5\r\nhello\r\n0\r\nX-Sum: 1\n\r\n" + SMUGGLED,
                                     400, 200, "RFC 9112 §7.1.2, §2.2"),
    "bad chunk the app never reads": _c(b"POST /hello HTTP/1.1\r\n" + H + b"Transfer-Encoding: "
                                        b"chunked\r\n\r\nzz\r\n" + SMUGGLED, 200, 400,
                                        "RFC 9112 §9.6 (the connection closes)", closes=True),
    "chunked body over the limit": _c(Stream(CHUNKED, b"4000\r\n" + b"a" * 0x4000 + b"\r\n",
                                             b"0\r\n\r\n", cap=2 * MAX_BODY), 413, 413,
                                      "RFC 9110 §15.5.14"),
    # ---- line endings and whitespace ----------------------------------------------------------
    "bare LF line endings": _c(b"GET /hello HTTP/1.1\n" + b"Host: t\n\n", 400, 200,
                               "RFC 9112 §2.2 (MAY accept; rejected)"),
    "bare CR in the request line": _c(b"GET /hello HTTP/1.1\rHost: t\r\n\r\n", 400, 400,
                                      "RFC 9112 §2.2"),
    "bare CR in a field value": _c(GET + H + b"X: a\rb\r\n\r\n", 400, 400, "RFC 9112 §2.2"),
    "empty line before the request (valid)": _c(b"\r\n" + GET + H + b"\r\n", 200, 200,
                                                "RFC 9112 §2.2 (SHOULD ignore)"),
    "whitespace before the first field": _c(GET + b" Host: t\r\n\r\n", 400, 400, "RFC 9112 §2.2"),
    "obs-fold": _c(GET + H + b"X: a\r\n b\r\n\r\n", 400, 400, "RFC 9112 §5.2"),
    "space before colon": _c(GET + H + b"X : a\r\n\r\n", 400, 400, "RFC 9112 §5.1"),
    "non-token field name": _c(GET + H + b"X(y): a\r\n\r\n", 400, 200, "RFC 9110 §5.1"),
    "field without colon": _c(GET + H + b"X-No-Colon\r\n\r\n", 400, 200, "RFC 9112 §5"),
    "empty field name": _c(GET + H + b": a\r\n\r\n", 400, 400, "RFC 9110 §5.1"),
    "HTAB and obs-text in a value (valid)": _c(GET + H + b"X: a\tb\xe9\xff\r\n\r\n", 200, 200,
                                               "RFC 9110 §5.5"),
    # ---- NUL and other control bytes ----------------------------------------------------------
    "NUL in a field value": _c(GET + H + b"X: a\x00b\r\n\r\n", 400, 400, "RFC 9110 §5.5"),
    "NUL in a field name": _c(GET + H + b"X\x00Y: a\r\n\r\n", 400, 400, "RFC 9110 §5.1"),
    "NUL in the target": _c(b"GET /hel\x00lo HTTP/1.1\r\n" + H + b"\r\n", 400, 400, "RFC 9112 §3.2"),
    "SOH in a field value": _c(GET + H + b"X: a\x01b\r\n\r\n", 400, 400, "RFC 9110 §5.5"),
    "ESC in a field value": _c(GET + H + b"X: a\x1bb\r\n\r\n", 400, 400, "RFC 9110 §5.5"),
    "DEL in a field value": _c(GET + H + b"X: a\x7fb\r\n\r\n", 400, 400, "RFC 9110 §5.5"),
    "DEL in the target": _c(b"GET /hel\x7flo HTTP/1.1\r\n" + H + b"\r\n", 400, 400, "RFC 3986 §2"),
    "8-bit byte in the target": _c(b"GET /\xff HTTP/1.1\r\n" + H + b"\r\n", 400, 400, "RFC 3986 §2"),
    # ---- Host and absolute URIs ---------------------------------------------------------------
    "no Host in HTTP/1.1": _c(b"GET /hello HTTP/1.1\r\n\r\n", 400, 400, "RFC 9112 §3.2"),
    "duplicate Host": _c(GET + b"Host: t\r\nHost: evil\r\n\r\n", 400, 400, "RFC 9112 §3.2"),
    "duplicate Host in HTTP/1.0": _c(b"GET /hello HTTP/1.0\r\nHost: t\r\nHost: evil\r\n\r\n", 400,
                                     400, "RFC 9112 §3.2"),
    "Host with a space": _c(GET + b"Host: t evil\r\n\r\n", 400, 400, "RFC 9110 §7.2"),
    "Host with userinfo": _c(GET + b"Host: u@t\r\n\r\n", 400, 400, "RFC 9110 §4.2.4"),
    "Host with a path": _c(GET + b"Host: t/../x\r\n\r\n", 400, 400, "RFC 9110 §7.2"),
    "no Host in HTTP/1.0 (valid)": _c(b"GET /hello HTTP/1.0\r\n\r\n", 200, 200,
                                      "RFC 9112 §3.2; nginx gives it a Host upstream"),
    "absolute URI (valid)": _c(b"GET http://t/hello HTTP/1.1\r\n" + H + b"\r\n", 200, 200,
                               "RFC 9112 §3.2.2 (MUST accept)"),
    "absolute URI with another Host (valid)": _c(b"GET http://t/hello HTTP/1.1\r\nHost: evil\r\n\r\n",
                                                 200, 200, "RFC 9112 §3.2.2 (Host ignored)"),
    "absolute URI with userinfo": _c(b"GET http://u:p@t/hello HTTP/1.1\r\n" + H + b"\r\n", 400,
                                     400, "RFC 9110 §4.2.4"),
    "absolute URI without host": _c(b"GET http:///hello HTTP/1.1\r\n" + H + b"\r\n", 400, 400,
                                    "RFC 9110 §4.2.1"),
    "absolute URI not http": _c(b"GET ftp://t/hello HTTP/1.1\r\n" + H + b"\r\n", 400, 200,
                                "RFC 9112 §3.2.2"),
    "authority-form for GET": _c(b"GET t:80 HTTP/1.1\r\n" + H + b"\r\n", 400, 400, "RFC 9112 §3.2.3"),
    "asterisk-form for GET": _c(b"GET * HTTP/1.1\r\n" + H + b"\r\n", 400, 400, "RFC 9112 §3.2.4"),
    # ---- request line -------------------------------------------------------------------------
    "two spaces after the method": _c(b"GET  /hello HTTP/1.1\r\n" + H + b"\r\n", 200, 200,
                                      "RFC 9112 §3 (MAY split on whitespace: llhttp and nginx do)"),
    "tab as separator": _c(b"GET\t/hello HTTP/1.1\r\n" + H + b"\r\n", 400, 400, "RFC 9112 §3"),
    "space in the target": _c(b"GET /hel lo HTTP/1.1\r\n" + H + b"\r\n", 400, 400, "RFC 9112 §3.2"),
    "lowercase protocol name": _c(b"GET /hello http/1.1\r\n" + H + b"\r\n", 400, 400,
                                  "RFC 9112 §2.3 (case-sensitive)"),
    "HTTP/1.2": _c(b"GET /hello HTTP/1.2\r\n" + H + b"\r\n", 505, 200, "RFC 9110 §15.6.6"),
    "HTTP/2.0 in an HTTP/1 request line": _c(b"GET /hello HTTP/2.0\r\n" + H + b"\r\n", 505, 505,
                                             "RFC 9110 §15.6.6"),
    "HTTP/2 connection preface": _c(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400, 400,
                                    "RFC 9113 §3.4 (no h2c here)"),
    "HTTP/0.9 request": _c(b"GET /hello\r\n\r\n", 400, NO_STATUS_LINE, "RFC 9112 §2.3 (0.9 not served; nginx answers in 0.9)"),
    "unknown method": _c(b"BREW /hello HTTP/1.1\r\n" + H + b"\r\n", 501, 501, "RFC 9110 §9.1"),
    "lowercase method": _c(b"get /hello HTTP/1.1\r\n" + H + b"\r\n", 501, 400,
                           "RFC 9110 §9.1 (case-sensitive)"),
    "CONNECT": _c(b"CONNECT t:443 HTTP/1.1\r\nHost: t:443\r\n\r\n", 501, 400, "RFC 9110 §9.3.6"),
    "TLS ClientHello on the plain port": _c(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
                                            + b"\x00" * 32 + b"\r\n\r\n", 400, 400,
                                            "RFC 9112 §3 (not HTTP)"),
    "Expect other than 100-continue": _c(POST + b"Expect: 200-ok\r\nContent-Length: 5\r\n\r\nhello",
                                         417, 200, "RFC 9110 §10.1.1"),
    # ---- pipelining: the answers keep the order of the requests ------------------------------
    "bad request line pipelined behind a good request": _c(
        GET + H + b"\r\nGET /hello HTTP/9.9\r\n" + H + b"\r\n", (200, 505), 200,
        "RFC 9112 §9.3.2 (responses in request order)", closes=True, sync=(200,)),
    "bad Content-Length pipelined behind a POST": _c(
        POST + b"Content-Length: 5\r\n\r\nhello" + GET + H + b"Content-Length: +1\r\n\r\nx"
        + SMUGGLED, (200, 400), 200, "RFC 9112 §9.3.2, §6.3(5)", closes=True, sync=(200,)),
    # ---- oversized lines and header counts ----------------------------------------------------
    "request line over the limit": _c(b"GET /" + b"a" * (HEADER_BUFFER + 100) + b" HTTP/1.1\r\n"
                                      + H + b"\r\n", 414, 414, "RFC 9112 §3 (414)"),
    "request line unbounded": _c(Stream(b"GET /", b"a" * 16384), 414, 414,
                                 "RFC 9112 §3 (414); unbounded lines"),
    "field over the limit": _c(GET + H + b"X-Big: " + b"v" * (HEADER_BUFFER + 100) + b"\r\n\r\n",
                               431, 400, "RFC 6585 §5 (431)"),
    "field unbounded": _c(Stream(GET + H + b"X-Big: ", b"v" * 16384), 431, 400,
                          "RFC 6585 §5 (431); unbounded lines"),
    "field name unbounded": _c(Stream(GET + H + b"X", b"X" * 16384), 431, 400,
                               "RFC 6585 §5 (431); unbounded lines"),
    "101 fields": _c(GET + H + b"".join(b"X-%d: v\r\n" % i for i in range(100)) + b"\r\n", 431, 431,
                     "RFC 6585 §5 (431)"),
    "1,000 fields": _c(GET + H + b"".join(b"X-%d: v\r\n" % i for i in range(1000)) + b"\r\n", 431, 400, "RFC 6585 §5 (431)"),
    "head of 40 KiB in 40 fields": _c(GET + H + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 1000)
                                                         for i in range(40)) + b"\r\n", 200, 400,
                                      "RFC 9112 §5 (server-chosen limits)"),
}

ROUTES = ("direct", "nginx")


# ---- the stack ------------------------------------------------------------------------------


class _DualStack(LocalStack):
    """The bundle's local stack whose server also listens on a loopback TCP port."""

    def __init__(self, *args: object, tcp: str, worker_args: list[str], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.tcp = tcp
        self.worker_args = worker_args

    def server_command(self) -> list[str]:
        assert self.plan is not None
        return [*super().server_command(), "-b", f"unix:{self.plan.socket_path}",
                "-b", self.tcp, *self.worker_args]


@dataclass
class Running:
    worker_class: str
    stack: Stack
    direct: str   # host:port of the server
    nginx: str    # host:port of nginx

    @property
    def master(self) -> int:
        return self.stack.pids["server"]

    def address(self, route: str) -> str:
        return self.direct if route == "direct" else self.nginx


def _start(worker_class: str, run: Path) -> Running:
    settings = {**STACK_SETTINGS, "app": bundle_tables(worker_class)["app"]}
    loaded = load_stack_settings(app_for(worker_class, APP), settings=settings,
                                 directory=REPO)
    for attempt in range(3):  # a free port can be taken by another process before it is bound
        tcp = f"127.0.0.1:{free_port()}"
        local = _DualStack(loaded, run, port=free_port(), tls_port=free_port(),
                           wait_healthy=False, tcp=tcp, worker_args=WORKER_CLASSES[worker_class])
        try:
            local.start(timeout=60)
            break
        except StackError as exc:
            if attempt == 2 or "Address already in use" not in str(exc):
                raise
    stack = Stack(local)
    try:
        _wait_workers(stack.pids["server"], WORKERS)
    except BaseException:
        stack.stop()
        raise
    return Running(worker_class, stack, tcp, stack.url.removeprefix("http://"))


def _stop(running: Running) -> str:
    """Stop one stack; what went wrong, or ""."""
    stack = running.stack
    stopped = stack.stop()
    log = stack.log()
    if not stopped.graceful:
        return f"{running.worker_class}: {stopped}\n{log[-3000:]}"
    if log.count(" booted (") != WORKERS:
        return f"{running.worker_class}: a worker was replaced:\n{log[-3000:]}"
    if re.search(r"exited with status|killed by|timed out|Traceback", log):
        return f"{running.worker_class}: a worker failed:\n{log[-3000:]}"
    return ""


@pytest.fixture(scope="module")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Running]]:
    """A stack per worker class, all started at once (start-up is mostly imports and waits)."""
    classes = selected_classes()
    runs = {name: tmp_path_factory.mktemp(f"hostile-{name}") for name in classes}
    with ThreadPoolExecutor(len(classes)) as pool:
        futures = {name: pool.submit(_start, name, runs[name]) for name in classes}
        wait(futures.values())
    started = {name: f.result() for name, f in futures.items() if f.exception() is None}
    try:
        for future in futures.values():
            future.result()  # re-raise the first start-up failure
        yield started
    finally:
        with ThreadPoolExecutor(len(classes)) as pool:
            problems = [p for p in pool.map(_stop, started.values()) if p]
        assert not problems, "\n\n".join(problems)


def _wait_workers(master: int, count: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while len(children_of(master)) < count:
        assert time.monotonic() < deadline, f"{count} workers did not start"
        time.sleep(0.05)


# ---- the client -----------------------------------------------------------------------------


@dataclass
class Outcome:
    status: int | str                  # the first response's status, or CLOSED
    responses: list[tuple[int, dict[str, str]]]
    closed: bool                       # the server closed the connection


class _Responses:
    """httptools callbacks: every complete response's status and headers."""

    def __init__(self) -> None:
        self.done: list[tuple[int, dict[str, str]]] = []
        self.headers: dict[str, str] = {}
        self.parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self.headers = {}

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_message_complete(self) -> None:
        self.done.append((self.parser.get_status_code(), self.headers))


def _connect(address: str, timeout: float) -> socket.socket:
    host, _, port = address.rpartition(":")
    return socket.create_connection((host, int(port)), timeout=timeout)


def send_case(address: str, data: bytes | Stream, *, until_close: bool,
              timeout: float = 10.0) -> Outcome:
    """Send ``data`` on a new connection; read the first response, then (``until_close``) on until
    the server closes the connection, collecting whatever other responses come."""
    collector = _Responses()
    closed = False
    first = b""
    deadline = time.monotonic() + timeout
    with _connect(address, timeout) as sock:
        try:
            if isinstance(data, Stream):
                _stream(sock, data)
            else:
                sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before it read everything (a limit)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (collector.done and not until_close):
                break
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            first = first or chunk
            try:
                collector.parser.feed_data(chunk)
            except httptools.HttpParserError:
                break
    status: int | str = collector.done[0][0] if collector.done else CLOSED
    if not collector.done and first and not first.startswith(b"HTTP/"):
        status = NO_STATUS_LINE
    return Outcome(status, collector.done, closed)


def _stream(sock: socket.socket, stream: Stream) -> None:
    sock.sendall(stream.prefix)
    sent = 0
    while sent < stream.cap:
        if select.select([sock], [], [], 0)[0]:
            return  # an answer (or the end of the connection) is waiting
        sock.sendall(stream.filler)
        sent += len(stream.filler)
    sock.sendall(stream.suffix)


# ---- the results table ----------------------------------------------------------------------

_SEEN: dict[tuple[str, str], dict[str, tuple[str, int]]] = {}


def _text(value: Expected) -> str:
    return ", ".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _record(reliability: Recorder, name: str, route: str, expected: str, worker_class: str,
            got: str, died: int) -> None:
    seen = _SEEN.setdefault((name, route), {})
    seen[worker_class] = (got, died)
    common = Counter(g for g, _ in seen.values()).most_common(1)[0][0]
    others = "; ".join(f"{cls}: {g}" for cls, (g, _) in seen.items() if g != common)
    got_text = f"{common} ({others})" if others else common
    classes = (f"all {len(WORKER_CLASSES)}" if set(seen) == set(WORKER_CLASSES)
               else ", ".join(seen))
    reliability.record("hostile", case=f"{name} [{CASES[name].ref}]", via=route,
                       expected=expected, got=got_text, classes=classes,
                       **{"workers died": sum(d for _, d in seen.values())})


# ---- the test -------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("worker_class", selected_classes())
def test_hostile_input(stacks: dict[str, Running], reliability: Recorder, worker_class: str,
                       name: str, route: str) -> None:
    running = stacks[worker_class]
    case = CASES[name]
    expected = case.direct if route == "direct" else case.nginx
    if route == "direct" and worker_class == "sync" and case.sync is not None:
        expected = case.sync
    workers = set(children_of(running.master))
    assert len(workers) == WORKERS
    is_error = isinstance(expected, int) and expected >= 400
    closes = route == "direct" and (is_error or case.closes)
    outcome = send_case(running.address(route), case.data, until_close=closes)
    got: Expected = outcome.status
    if isinstance(expected, tuple):
        got = tuple(status for status, _ in outcome.responses)

    normal = send_case(running.address(route), NORMAL, until_close=False)
    died = len(workers - set(children_of(running.master)))
    shown = case.direct if route == "direct" else case.nginx
    if route == "direct" and case.sync is not None:
        shown_text = f"{_text(shown)} (sync: {_text(case.sync)})"
    else:
        shown_text = _text(shown)
    _record(reliability, name, route, shown_text, worker_class, _text(got), died)

    assert got == expected, (name, route, outcome)
    assert normal.status == 200, f"a normal request after {name!r} failed: {normal}"
    assert died == 0, f"{died} worker(s) died after {name!r}"
    if route == "direct":  # (nginx answers what it parsed as a second request itself)
        statuses = [status for status, _ in outcome.responses]
        assert 404 not in statuses, f"a smuggled request was served: {outcome}"
    if closes:
        # No other response, and the server closes the connection; an error says so.
        assert len(outcome.responses) == (len(expected) if isinstance(expected, tuple) else 1), \
            outcome
        assert outcome.closed, f"the server kept the connection open after a {expected}"
        last = outcome.responses[-1]
        if last[0] >= 400:
            assert last[1].get("connection") == "close", outcome
