"""appserver.wsgi, part 1: the environ (PEP 3333 keys, paths, hosts, trusted forwarding headers)
and wsgi.input.  Response framing is in ``test_wsgi_response.py``."""

from __future__ import annotations

import io
import sys
from typing import Any

import pytest

from appserver.http import RequestHead, RequestParser
from appserver.wsgi import SERVER_SOFTWARE, FileWrapper, InputStream, WSGIContext, build_environ


def parse_head(raw: bytes) -> RequestHead:
    parser = RequestParser()
    parser.feed(raw)
    head = parser.next_event()
    assert isinstance(head, RequestHead)
    return head


def environ_for(raw: bytes, *, trusted: tuple[str, ...] = ("127.0.0.1",),
                peer: tuple[str, int] | None = ("10.1.2.3", 40000),
                local: tuple[str, int] | None = ("192.0.2.1", 8000), is_unix: bool = False,
                errors: io.StringIO | None = None, hops: int = 1) -> dict[str, Any]:
    ctx = WSGIContext(multithread=True, multiprocess=True, trusted_ips=list(trusted),
                      forwarded_hops=hops, errors=errors)
    return build_environ(ctx, parse_head(raw), InputStream(lambda: b""), peer=peer, local=local,
                         is_unix=is_unix)


def get(target: bytes, *headers: bytes, version: bytes = b"1.1") -> bytes:
    return b"GET " + target + b" HTTP/" + version + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n"


def test_pep3333_keys() -> None:
    errors = io.StringIO()
    env = environ_for(get(b"/a/b?x=1&y=%20", b"Host: example.com", b"User-Agent: t"), errors=errors)
    assert env["REQUEST_METHOD"] == "GET"
    assert (env["SCRIPT_NAME"], env["PATH_INFO"], env["QUERY_STRING"]) == ("", "/a/b", "x=1&y=%20")
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("example.com", "80")
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("10.1.2.3", "40000")
    assert env["RAW_URI"] == env["REQUEST_URI"] == "/a/b?x=1&y=%20"
    assert env["HTTP_HOST"] == "example.com" and env["HTTP_USER_AGENT"] == "t"
    assert env["wsgi.version"] == (1, 0) and env["wsgi.url_scheme"] == "http"
    assert env["wsgi.errors"] is errors
    assert (env["wsgi.multithread"], env["wsgi.multiprocess"], env["wsgi.run_once"]) == (True, True, False)
    assert env["wsgi.input_terminated"] is True
    assert env["wsgi.file_wrapper"] is FileWrapper
    assert isinstance(env["wsgi.input"], InputStream)
    assert env["SERVER_SOFTWARE"] == SERVER_SOFTWARE
    assert "CONTENT_LENGTH" not in env and "CONTENT_TYPE" not in env
    assert all(type(v) is str for k, v in env.items() if k.isupper())  # PEP 3333: native strings


def test_wsgi_errors_defaults_to_stderr() -> None:
    assert environ_for(get(b"/", b"Host: a"))["wsgi.errors"] is sys.stderr


@pytest.mark.parametrize(("target", "path_info", "query"), [
    (b"/caf%C3%A9", "/caf\xc3\xa9", ""),           # decoded bytes, then latin-1 (PEP 3333)
    (b"/a%2Fb%20c", "/a/b c", ""),
    (b"/100%25", "/100%", ""),
    (b"/bad%zz%4", "/bad%zz%4", ""),                # invalid escapes stay as they are
    (b"/p?q=%C3%A9&r", "/p", "q=%C3%A9&r"),         # the query string is never decoded
    (b"/p?", "/p", ""),
    (b"/p?a?b", "/p", "a?b"),
    (b"/a#frag", "/a", ""),
    (b"/a?x=1#frag", "/a", "x=1"),                  # a fragment is never part of the query
    (b"//double//slash", "//double//slash", ""),
])
def test_path_and_query(target: bytes, path_info: str, query: str) -> None:
    env = environ_for(get(target, b"Host: a"))
    assert (env["PATH_INFO"], env["QUERY_STRING"]) == (path_info, query)
    assert env["RAW_URI"] == target.decode("latin-1")


@pytest.mark.parametrize(("target", "path_info", "name", "port", "query"), [
    (b"http://example.com:8080/p?q", "/p", "example.com", "8080", "q"),
    (b"http://example.com", "/", "example.com", "80", ""),
    (b"http://example.com?x=1", "/", "example.com", "80", "x=1"),
    (b"HTTP://Example.COM/a%20b", "/a b", "Example.COM", "80", ""),
    (b"http://[::1]:81/", "/", "[::1]", "81", ""),
    (b"http://h/#f", "/", "h", "80", ""),
])
def test_absolute_form_authority_replaces_host(target: bytes, path_info: str, name: str, port: str,
                                               query: str) -> None:
    env = environ_for(get(target, b"Host: other.example"))
    assert (env["PATH_INFO"], env["SERVER_NAME"], env["SERVER_PORT"]) == (path_info, name, port)
    assert env["QUERY_STRING"] == query
    # RFC 9112 §3.2.2: the server MUST ignore the received Host; apps read HTTP_HOST.
    assert env["HTTP_HOST"] == target.split(b"://")[1].split(b"/")[0].split(b"?")[0].split(b"#")[0].decode()
    assert env["RAW_URI"] == target.decode()


@pytest.mark.parametrize(("host", "name", "port"), [
    (b"example.com", "example.com", "80"), (b"example.com:8443", "example.com", "8443"),
    (b"[::1]:8080", "[::1]", "8080"), (b"[::1]", "[::1]", "80"), (b"127.0.0.1:9", "127.0.0.1", "9"),
    (b"h:", "h", "80"),
])
def test_server_name_and_port_from_host(host: bytes, name: str, port: str) -> None:
    env = environ_for(get(b"/", b"Host: " + host))
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == (name, port)


def test_server_name_without_host_is_the_local_address() -> None:
    env = environ_for(get(b"/", version=b"1.0"))
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("192.0.2.1", "8000")
    env = environ_for(get(b"/", version=b"1.0"), local=None, peer=None, is_unix=True)
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("localhost", "80")
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("", "0")


def test_header_names_with_underscores_are_dropped() -> None:
    # Else "X-Forwarded_For" would pass for X-Forwarded-For (nginx drops them too).
    env = environ_for(get(b"/", b"Host: a", b"X_Forwarded_For: 6.6.6.6", b"X-Real_IP: 6.6.6.6",
                          b"X-Fine: 1"), trusted=("*",))
    assert "HTTP_X_FORWARDED_FOR" not in env and "HTTP_X_REAL_IP" not in env
    assert env["REMOTE_ADDR"] == "10.1.2.3"
    assert env["HTTP_X_FINE"] == "1"


def test_repeated_headers_are_joined_with_commas_in_order() -> None:
    env = environ_for(get(b"/", b"Host: a", b"Accept: text/html", b"X-Dup: 1", b"accept: */*",
                          b"X-DUP: 2", b"X-Dup: 3"))
    assert env["HTTP_ACCEPT"] == "text/html,*/*"
    assert env["HTTP_X_DUP"] == "1,2,3"


def test_content_type_and_length_have_no_http_prefix() -> None:
    env = environ_for(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n")
    assert (env["CONTENT_TYPE"], env["CONTENT_LENGTH"]) == ("text/plain", "5")
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
    env = environ_for(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert "CONTENT_LENGTH" not in env and env["HTTP_TRANSFER_ENCODING"] == "chunked"


def test_header_values_are_latin1_strings() -> None:
    env = environ_for(get(b"/", b"Host: a", b"X-Bytes: caf\xc3\xa9 \xff"))
    assert env["HTTP_X_BYTES"] == "caf\xc3\xa9 \xff"


def test_script_name_from_the_environment_is_a_mount_point(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCRIPT_NAME", "/app/")
    for target, path_info in ((b"/app/x", "/x"), (b"/app", ""), (b"/application", "/application"),
                              (b"/other", "/other")):
        env = environ_for(get(target, b"Host: a"))
        assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", path_info), target


# ---- X-Forwarded-For / -Proto -------------------------------------------------------------------

XFF = b"X-Forwarded-For: "
XFP = b"X-Forwarded-Proto: "


@pytest.mark.parametrize(("trusted", "peer", "is_unix", "applies"), [
    (("127.0.0.1",), ("127.0.0.1", 5000), False, True),
    (("127.0.0.1",), ("10.1.2.3", 5000), False, False),
    (("127.0.0.1", "10.1.2.3"), ("10.1.2.3", 5000), False, True),
    ((" 10.1.2.3 ",), ("10.1.2.3", 5000), False, True),   # list items are stripped
    (("*",), ("203.0.113.9", 5000), False, True),
    ((), None, True, True),                                # a unix-socket peer is nginx
    (("127.0.0.1",), ("::1", 5000), False, False),
])
def test_forwarded_headers_only_from_trusted_peers(trusted: tuple[str, ...], peer: tuple[str, int] | None,
                                                    is_unix: bool, applies: bool) -> None:
    env = environ_for(get(b"/", b"Host: a", XFF + b"1.2.3.4", XFP + b"https"), trusted=trusted,
                      peer=peer, is_unix=is_unix)
    if applies:
        assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"], env["SERVER_PORT"]) == ("1.2.3.4", "https", "443")
    else:
        assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == (peer[0] if peer else "", "5000")
        assert (env["wsgi.url_scheme"], env["SERVER_PORT"]) == ("http", "80")
    assert env["HTTP_X_FORWARDED_FOR"] == "1.2.3.4"  # the header itself is always passed on


@pytest.mark.parametrize(("trusted", "hops", "chain", "client"), [
    # One hop by default: the entry the directly connected proxy appended, whatever is left of it.
    (("127.0.0.1",), 1, b"6.6.6.6, 1.2.3.4", "1.2.3.4"),
    # An address in the allow list is not skipped: it is what the proxy saw (a loopback client).
    (("127.0.0.1", "10.0.0.2"), 1, b"6.6.6.6, 1.2.3.4, 10.0.0.2", "10.0.0.2"),
    (("127.0.0.1", "::1"), 1, b"6.6.6.6, ::1", "::1"),
    # '*' says every peer may send the header, not that every entry is believed.
    (("*",), 1, b"6.6.6.6, 1.2.3.4", "1.2.3.4"),
    (("127.0.0.1",), 2, b"6.6.6.6, 1.2.3.4, 10.0.0.2", "1.2.3.4"),  # a chain of two proxies
    (("127.0.0.1",), 2, b"10.0.0.2", "127.0.0.1"),       # fewer entries than hops: the peer
    (("127.0.0.1",), 1, b" 1.2.3.4 ", "1.2.3.4"),
    (("127.0.0.1",), 1, b"1.2.3.4, ", "127.0.0.1"),      # an empty believed entry: the peer
    (("127.0.0.1",), 1, b"", "127.0.0.1"),
    (("127.0.0.1",), 1, b"unknown", "127.0.0.1"),        # not an address: the peer
    (("127.0.0.1",), 1, b"6.6.6.6, 2001:db8::1", "2001:db8::1"),
    (("127.0.0.1",), 1, b"[2001:db8::7]", "2001:db8::7"),
])
def test_x_forwarded_for_chain(trusted: tuple[str, ...], hops: int, chain: bytes, client: str) -> None:
    env = environ_for(get(b"/", b"Host: a", XFF + chain), trusted=trusted, peer=("127.0.0.1", 5000),
                      hops=hops)
    assert env["REMOTE_ADDR"] == client
    assert env["REMOTE_PORT"] == ("5000" if client == "127.0.0.1" else "0")


def test_x_forwarded_for_in_two_fields_is_one_chain() -> None:
    # Two fields are one list (RFC 9110 §5.3): the second field's last entry is the rightmost.
    env = environ_for(get(b"/", b"Host: a", XFF + b"1.2.3.4", XFF + b"6.6.6.6, 5.6.7.8"),
                      peer=("127.0.0.1", 1))
    assert env["REMOTE_ADDR"] == "5.6.7.8"


@pytest.mark.parametrize(("proto", "hops", "scheme"), [
    (b"https", 1, "https"), (b"HTTPS", 1, "https"), (b"http", 1, "http"),
    (b"https, http", 1, "http"),    # the rightmost, as for X-Forwarded-For
    (b"http, https", 1, "https"),
    (b"https, http", 2, "https"),   # the same hop as X-Forwarded-For
    (b"https", 2, "http"),          # fewer entries than hops: ignored
    (b"ftp", 1, "http"), (b"", 1, "http"),
])
def test_x_forwarded_proto(proto: bytes, hops: int, scheme: str) -> None:
    env = environ_for(get(b"/", b"Host: a:8443", XFP + proto), peer=("127.0.0.1", 1), hops=hops)
    assert env["wsgi.url_scheme"] == scheme
    assert env["SERVER_PORT"] == "8443"  # an explicit port wins over the scheme's default


def test_x_forwarded_host_is_never_read() -> None:
    env = environ_for(get(b"/", b"Host: real.example", b"X-Forwarded-Host: evil.example"),
                      peer=("127.0.0.1", 1))
    assert (env["HTTP_HOST"], env["SERVER_NAME"]) == ("real.example", "real.example")


# ---- wsgi.input ---------------------------------------------------------------------------------

class Pull:
    """A fake connection: hands out the given pieces, then b"" forever; counts the calls."""

    def __init__(self, *pieces: bytes) -> None:
        self.pieces = list(pieces)
        self.calls = 0
        self.after_end = 0

    def __call__(self) -> bytes:
        self.calls += 1
        if self.pieces:
            return self.pieces.pop(0)
        self.after_end += 1
        return b""


def test_read_all_and_read_after_the_end() -> None:
    pull = Pull(b"hel", b"lo ", b"world")
    stream = InputStream(pull)
    assert stream.read() == b"hello world"
    assert stream.read() == b"" and stream.read(5) == b"" and stream.readline() == b""
    assert pull.after_end == 1  # the end is remembered, never asked for again


@pytest.mark.parametrize("size", [None, -1])
def test_read_without_size(size: int | None) -> None:
    assert InputStream(Pull(b"ab", b"cd")).read(size) == b"abcd"


def test_read_sized_pulls_only_what_it_needs() -> None:
    pull = Pull(b"abc", b"def", b"ghi")
    stream = InputStream(pull)
    assert stream.read(0) == b"" and pull.calls == 0
    assert stream.read(4) == b"abcd" and pull.calls == 2
    assert stream.read(2) == b"ef" and pull.calls == 2
    assert stream.read(100) == b"ghi"


def test_a_huge_body_is_never_held_whole() -> None:
    def endless() -> bytes:
        return b"x" * 65536

    stream = InputStream(endless)
    for _ in range(100):
        assert len(stream.read(65536)) == 65536
    assert len(stream._buffer) < 2 * 65536


def test_readline() -> None:
    stream = InputStream(Pull(b"first li", b"ne\nsecond\nthi", b"rd", b"\n", b"last"))
    assert stream.readline() == b"first line\n"
    assert stream.readline() == b"second\n"
    assert stream.readline() == b"third\n"
    assert stream.readline() == b"last"
    assert stream.readline() == b""


@pytest.mark.parametrize(("size", "first", "second"), [
    (3, b"abc", b"d\n"), (5, b"abcd\n", b"efg\n"), (100, b"abcd\n", b"efg\n"), (0, b"", b"abcd\n"),
    (None, b"abcd\n", b"efg\n"), (-1, b"abcd\n", b"efg\n"),
])
def test_readline_with_a_size(size: int | None, first: bytes, second: bytes) -> None:
    stream = InputStream(Pull(b"ab", b"cd\nefg\n"))
    assert stream.readline(size) == first
    assert stream.readline() == second


def test_readline_with_a_size_does_not_wait_for_a_newline() -> None:
    pull = Pull(b"x" * 10, b"y" * 10)
    assert InputStream(pull).readline(5) == b"xxxxx" and pull.calls == 1


@pytest.mark.parametrize("hint", [None, -1, 0, 1, 2, 3, 4, 6, 7, 100])
def test_readlines_hint_as_io_does(hint: int | None) -> None:
    data = b"aa\nbb\ncc\nd"
    assert InputStream(Pull(data[:4], data[4:])).readlines(hint) == io.BytesIO(data).readlines(hint)


def test_iteration_yields_lines() -> None:
    assert list(InputStream(Pull(b"one\ntw", b"o\n", b"three"))) == [b"one\n", b"two\n", b"three"]


def test_mixed_reads_lose_nothing() -> None:
    data = b"".join(b"line %d\n" % i for i in range(200))
    stream = InputStream(Pull(*(data[i:i + 7] for i in range(0, len(data), 7))))
    out = [stream.read(3), stream.readline(), stream.readline(4), *stream.readlines(20), stream.read(11)]
    out += list(stream)
    assert b"".join(out) == data


# ---- wsgi.file_wrapper ----------------------------------------------------------------------------

def test_file_wrapper_iterates_in_blocks_and_closes_the_file() -> None:
    file = io.BytesIO(b"x" * 10)
    wrapper = FileWrapper(file, 4)
    assert list(wrapper) == [b"xxxx", b"xxxx", b"xx"]
    wrapper.close()
    assert file.closed


def test_file_wrapper_without_close() -> None:
    class Reader:
        def __init__(self) -> None:
            self.data = [b"ab", b""]

        def read(self, size: int) -> bytes:
            return self.data.pop(0)

    wrapper = FileWrapper(Reader())  # type: ignore[arg-type]
    assert list(wrapper) == [b"ab"]
    assert not hasattr(wrapper, "close")
