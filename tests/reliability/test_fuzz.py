"""Fuzzing: only the documented errors may escape.

* The HTTP request parser (appserver/http/parser.py), with hypothesis: arbitrary bytes, and valid
  pipelines mutated (bytes replaced, inserted, deleted, duplicated, HTTP fragments spliced in),
  each fed whole and cut into random reads, under the default limits and under small ones, with
  and without declining upgrades.  Only :class:`ProtocolError` with a documented status may
  escape; after it the parser stays dead; every head keeps the limits; bodies never exceed
  ``max_body``.  (tests/http/test_parser_fuzz.py holds the finer properties: events independent
  of the cuts.)
* The same parser with atheris (coverage-guided, libFuzzer): ``fuzz/http_parser.py`` run for a
  bounded number of inputs from the seed corpus ``fuzz/corpus/http``.
* The bundle's settings loader (``load_settings`` / ``validate_settings``): arbitrary bytes as
  the file, arbitrary TOML-like tables, one key of a valid file set to a value of any type, and
  unknown keys anywhere.  Only :class:`SettingsError` may escape; it names the file, and the key
  at fault.
* The server's settings (``ServerConfig``) from each source: a settings file of arbitrary bytes, a
  ``[server]`` table with any key set to any value, ``APPSERVER_<NAME>`` variables with any text,
  and ``appserver serve --print-config`` with any flag and value.  Only :class:`ConfigError` may
  escape (the command line answers exit status 2 instead), naming where the value came from.

Every property is derandomized and bounded (``max_examples``), so a run is repeatable; the input
counts go to the "fuzz" table of docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import io
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appserver.bundle.loading import load_settings, validate_settings
from appserver.bundle.settings import (
    AppSettings,
    ComposeSettings,
    NginxSettings,
    SecurityHeaders,
    SettingsError,
    TlsSettings,
)
from appserver.cli import main as cli_main
from appserver.config import ConfigError, Layer, ServerConfig, build_config, load_config
from appserver.http import NEED_DATA, Body, EndOfMessage, ProtocolError, RequestHead, RequestParser
from tests.bundle.conftest import read_data
from tests.http.test_parser_fuzz import FRAGMENTS, cut, pipeline
from tests.reliability.report import Recorder

REPO = Path(__file__).resolve().parents[2]


def bounded(examples: int) -> settings:
    return settings(max_examples=examples, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


@dataclass
class Tally:
    """Inputs tried and exceptions that escaped (re-raised, so hypothesis shrinks them)."""

    inputs: int = 0
    escaped: int = 0

    @contextlib.contextmanager
    def attempt(self, *documented: type[BaseException]) -> Iterator[None]:
        self.inputs += 1
        try:
            yield
        except documented:
            raise
        except BaseException:
            self.escaped += 1
            raise


# ==== the HTTP request parser ===================================================================

STATUSES = frozenset({400, 413, 414, 417, 431, 501, 505})
DEFAULT_LIMITS = {"max_request_line": 4094, "max_fields": 100, "max_field_size": 8190, "max_body": 0}
SMALL_LIMITS = {"max_request_line": 64, "max_fields": 8, "max_field_size": 64, "max_body": 32}
TINY_LIMITS = {"max_request_line": 24, "max_fields": 2, "max_field_size": 16, "max_body": 3}
NEXT = b"GET /next HTTP/1.1\r\nHost: next\r\n\r\n"

HTTP_EXAMPLES = 1000
limits_st = st.sampled_from([DEFAULT_LIMITS, SMALL_LIMITS, TINY_LIMITS])
splits = st.lists(st.integers(min_value=0, max_value=1 << 16), max_size=16)


def parse(pieces: list[bytes], limits: dict[str, int], decline: bool) -> int | None:
    """Feed ``pieces`` (then EOF), checking every event; the ProtocolError's status, or None.
    Any other exception escapes to the caller."""
    parser = RequestParser(**limits)
    body = 0

    def drain() -> None:
        nonlocal body
        while (event := parser.next_event()) is not NEED_DATA:
            if isinstance(event, RequestHead):
                body = 0
                assert len(event.target) <= limits["max_request_line"], event
                assert len(event.headers) <= limits["max_fields"], event
                for name, value in event.headers:
                    assert len(name) + len(value) + 2 <= limits["max_field_size"], (name, value)
            elif isinstance(event, Body):
                assert event.data, "empty Body event"
                body += len(event.data)
                assert not limits["max_body"] or body <= limits["max_body"], body
            else:
                assert isinstance(event, EndOfMessage), event

    try:
        for piece in pieces:
            parser.feed(piece)
            drain()
            if decline and parser.upgraded:
                parser.decline_upgrade()
                drain()
        parser.feed_eof()
        drain()
    except ProtocolError as exc:
        assert exc.status in STATUSES, exc
        for again in (parser.next_event, lambda: parser.feed(NEXT)):
            with pytest.raises(ProtocolError):
                again()
        return exc.status
    return None


@st.composite
def mutated_pipeline(draw: st.DrawFn) -> bytes:
    data, _ = draw(pipeline())
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["replace", "insert", "delete", "duplicate", "fragment"]))
        if op == "replace" and at < len(data):
            data = data[:at] + draw(st.binary(min_size=1, max_size=1)) + data[at + 1:]
        elif op == "insert":
            data = data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
        elif op == "delete":
            data = data[:at] + data[at + draw(st.integers(1, 16)):]
        elif op == "duplicate":
            data = data[:at] + data[at:at + draw(st.integers(1, 64))] + data[at:]
        else:
            data = data[:at] + draw(st.sampled_from(FRAGMENTS)) + data[at:]
    return data


http_inputs = st.one_of(st.binary(max_size=600), mutated_pipeline(),
                        st.lists(st.sampled_from(FRAGMENTS), max_size=40).map(b"".join))


def test_http_parser_only_protocol_errors_escape(reliability: Recorder) -> None:
    tally = Tally()

    @bounded(HTTP_EXAMPLES)
    @given(http_inputs, splits, limits_st, st.booleans())
    def prop(data: bytes, points: list[int], limits: dict[str, int], decline: bool) -> None:
        with tally.attempt(ProtocolError):
            parse([data], limits, decline)
            parse(cut(data, points), limits, decline)
            parse([data[i:i + 1] for i in range(min(len(data), 64))] + [data[64:]], limits,
                  decline)

    try:
        prop()
    finally:
        reliability.record(
            "fuzz", target="HTTP request parser (appserver/http/parser.py)", tool="hypothesis",
            inputs=tally.inputs, escaped=tally.escaped, **{
                "documented errors": "ProtocolError (400, 413, 414, 417, 431, 501, 505)"})


# ---- atheris ---------------------------------------------------------------------------------

ATHERIS_RUNS = 50_000
ATHERIS_SECONDS = 15


def _has_atheris() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _has_atheris(), reason="atheris is not installed (Linux wheels only)")
def test_http_parser_atheris_bounded(reliability: Recorder, tmp_path: Path) -> None:
    """fuzz/http_parser.py under libFuzzer for a bounded run: no crash, no hang."""
    fuzz = REPO / "fuzz"
    found = tmp_path / "corpus"  # libFuzzer adds what it finds to the first directory
    found.mkdir()
    done = subprocess.run(
        [sys.executable, str(fuzz / "http_parser.py"), str(found), str(fuzz / "corpus" / "http"),
         f"-dict={fuzz / 'http.dict'}", f"-runs={ATHERIS_RUNS}",
         f"-max_total_time={ATHERIS_SECONDS}", "-timeout=10", "-rss_limit_mb=1024",
         f"-artifact_prefix={tmp_path}/", "-print_final_stats=1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=ATHERIS_SECONDS + 60,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    log = done.stdout + done.stderr
    match = re.search(r"Done (\d+) runs in (\d+) second", log)
    runs = int(match.group(1)) if match else 0
    crashed = done.returncode != 0 or any(tmp_path.glob("crash-*")) or any(tmp_path.glob("timeout-*"))
    reliability.record(
        "fuzz", target="HTTP request parser (appserver/http/parser.py)",
        tool="atheris (libFuzzer, coverage-guided)", inputs=runs, escaped=int(crashed), **{
            "documented errors": "ProtocolError (400, 413, 414, 417, 431, 501, 505)"})
    assert not crashed, f"atheris found a crash (exit {done.returncode}):\n{log[-6000:]}"
    assert runs > 1000, log[-3000:]


# ==== TOML-like values ==========================================================================

INTERESTING_TEXT = [
    "", " ", "0", "-1", "1e400", "nan", "auto", "10m", "1g", "2G", "512MiB", "0660", "0o777", "9999",
    "8" * 5000, "/", "/ws/", "..", "../x", "/abs/path", "a;b", "a{b}", "$host", "a\"b", "a\nb",
    "unix:", "unix:/x.sock", "fd://", "fd://3", "[::1]:80", "host:port", "127.0.0.1:99999",
    "myapp:application", "pkg.mod:factory()", "not an app!", "*.example.com", "-", "true",
    "X-XSS-Protection", "10.0.0.0/8", "sync", "gthread", "tornado", "é", "\x00", "²",
]
text_st = st.one_of(st.sampled_from(INTERESTING_TEXT), st.text(max_size=24))
scalar_st = st.one_of(
    st.booleans(), st.integers(), st.integers(-2, 70000), st.floats(allow_nan=True),
    text_st, st.datetimes(), st.dates(), st.times(),
    st.datetimes(timezones=st.just(datetime.UTC)))
toml_value = st.recursive(
    scalar_st,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text_st, inner, max_size=4),
    max_leaves=8)


# ==== the bundle's settings loader ==============================================================

SECTIONS: dict[tuple[str, ...], type[Any]] = {
    ("server",): ServerConfig, ("app",): AppSettings, ("nginx",): NginxSettings,
    ("nginx", "tls"): TlsSettings, ("nginx", "security_headers"): SecurityHeaders,
    ("compose",): ComposeSettings,
}
FIELDS = [(section, name) for section, model in SECTIONS.items() for name in model.model_fields
          if not (section == ("nginx",) and name in ("tls", "security_headers"))]
BASES = {"minimal": {"app": {"module": "myapp:application"}}, "maximal": read_data("maximal.toml"),
         "bare": read_data("bare.toml")}
SETTINGS_PATH = Path("/fuzz/project/settings.toml")


def table(data: dict[str, Any], section: tuple[str, ...]) -> dict[str, Any]:
    for part in section:
        if not isinstance(data.get(part), dict):
            data[part] = {}
        data = data[part]
    return data


def settings_problem(data: Any) -> str | None:
    """validate_settings: None when valid, else the SettingsError's message (each line naming
    the file first); anything else escapes."""
    try:
        validate_settings(data, SETTINGS_PATH)
    except SettingsError as exc:
        message = str(exc)
        # (Not line by line: a quoted TOML key may hold a line break, printed as it is.)
        assert message.startswith(f"{SETTINGS_PATH}: "), message
        return message
    return None


def test_settings_loader_only_settings_errors_escape(reliability: Recorder) -> None:
    tally = Tally()

    @bounded(300)
    @given(st.sampled_from(sorted(BASES)), st.sampled_from(FIELDS), toml_value)
    def one_key_any_value(base: str, field: tuple[tuple[str, ...], str], value: Any) -> None:
        section, name = field
        data = copy.deepcopy(BASES[base])
        table(data, section)[name] = value
        with tally.attempt(SettingsError):
            message = settings_problem(data)
        if message is not None:
            dotted = ".".join((*section, name))
            # A field's own check names its key path; a check across fields (two ports, two
            # locations) names the keys in its message.
            assert dotted in message or (name in message and section[0] in message), message

    @bounded(200)
    @given(st.sampled_from(sorted(BASES)), st.sampled_from([(), *SECTIONS]), text_st, toml_value)
    def unknown_key(base: str, section: tuple[str, ...], name: str, value: Any) -> None:
        model = SECTIONS.get(section)
        known = model.model_fields if model else {"server", "app", "nginx", "compose"}
        if name in known:
            return
        data = copy.deepcopy(BASES[base])
        (table(data, section) if section else data)[name] = value
        with tally.attempt(SettingsError):
            message = settings_problem(data)
        assert message is not None, f"unknown key {name!r} in {section} accepted"
        dotted = ".".join((*section, name))
        assert f"{SETTINGS_PATH}: {dotted} = " in message and "unknown key" in message, message

    @bounded(200)
    @given(st.dictionaries(st.sampled_from(["server", "app", "nginx", "compose", "x"]) | text_st,
                           toml_value, max_size=5))
    def any_table(data: dict[str, Any]) -> None:
        with tally.attempt(SettingsError):
            settings_problem(data)

    @bounded(200)
    @given(st.one_of(st.binary(max_size=300), st.sampled_from(sorted(BASES)).flatmap(mutated_file)))
    def any_file(content: bytes) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "settings.toml"
            path.write_bytes(content)
            with tally.attempt(SettingsError):
                try:
                    load_settings(path)
                except SettingsError as exc:
                    assert str(path) in str(exc)

    try:
        for prop in (one_key_any_value, unknown_key, any_table, any_file):
            prop()
    finally:
        reliability.record(
            "fuzz", target="bundle settings loader (load_settings, validate_settings)",
            tool="hypothesis", inputs=tally.inputs, escaped=tally.escaped, **{
                "documented errors": "SettingsError naming the file and key"})


def mutated_file(base: str) -> st.SearchStrategy[bytes]:
    """A settings file's bytes with a few bytes changed (TOML syntax, UTF-8 and values broken)."""
    text = (REPO / "tests" / "bundle" / "data" / f"{base}.toml").read_bytes() \
        if base != "minimal" else b'[app]\nmodule = "myapp:application"\n'

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        data = text
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, len(data)))
            data = data[:at] + draw(st.binary(max_size=3)) + data[at + draw(st.integers(0, 3)):]
        return data

    return build()


# ==== the server's settings: TOML file, environment, command line ===============================

SERVER_KEYS = list(ServerConfig.model_fields)


def config_problem(*layers: Layer) -> str | None:
    try:
        build_config(*layers)
    except ConfigError as exc:
        return str(exc)
    return None


def test_server_config_only_config_errors_escape(reliability: Recorder) -> None:
    tally = Tally()
    file_label = "/fuzz/settings.toml: [server]"

    @bounded(300)
    @given(st.dictionaries(st.sampled_from(SERVER_KEYS) | text_st, toml_value, min_size=1,
                           max_size=4))
    def toml_table(values: dict[str, Any]) -> None:
        layer = Layer(values, {key: f"{file_label} {key}" for key in values})
        with tally.attempt(ConfigError):
            message = config_problem(layer)
        if message is None:
            return
        assert message.startswith(file_label), message
        unknown = [key for key in values if key not in ServerConfig.model_fields]
        for key in unknown:  # every unknown key, at once
            assert f"{file_label} {key}: unknown setting {key!r}" in message, message
        if not unknown:
            assert any(f"{file_label} {key} = " in message for key in values), message

    @bounded(200)
    @given(st.sampled_from(SERVER_KEYS + ["web_concurrency", "nonsense", "fds"]), text_st)
    def environment(key: str, text: str) -> None:
        name = "WEB_CONCURRENCY" if key == "web_concurrency" else f"APPSERVER_{key.upper()}"
        if "\x00" in text:
            return  # an environment cannot hold NUL
        with tally.attempt(ConfigError):
            try:
                load_config(environ={name: text})
            except ConfigError as exc:
                assert f"environment {name}" in str(exc), str(exc)

    flags = [(name, flag) for name, field in ServerConfig.model_fields.items()
             for flag in (field.json_schema_extra or {}).get("cli", [])  # type: ignore[union-attr]
             if flag.startswith("--")]
    options = [(flag, name) for name, flag in flags]

    @bounded(250)
    @given(st.sampled_from(flags), st.lists(text_st, min_size=0, max_size=2))
    def command_line(flag: tuple[str, str], values: list[str]) -> None:
        name, option = flag
        if any("\x00" in value for value in values):
            return
        argv = ["serve", "--print-config", option, *values]
        out, err = io.StringIO(), io.StringIO()
        with tally.attempt(ConfigError), contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(err):
            try:
                status = cli_main(argv)
            except SystemExit as exc:  # argparse's usage errors
                status = exc.code
        said = err.getvalue()
        assert status in (0, 2), (argv, status, said)
        if status == 2:
            assert said.startswith(("usage:", "appserver: error:")), said
        if said.startswith("appserver: error: command line"):
            # The value's source is named: the setting's option (its first long spelling when
            # it has two), or the positional MODULE:CALLABLE.
            # (Or another flag argparse took a value for -- "--i" abbreviates --initgroups --
            # whose gunicorn setting is refused by name.)
            assert any(f in said for f, in_ in options if in_ == name) \
                or "MODULE:CALLABLE" in said or " is not supported yet" in said, said

    @bounded(200)
    @given(st.one_of(st.binary(max_size=200),
                     st.sampled_from([b"[server]\n", b"[server]\nworkers = 2\n", b"server = 3\n"])
                     .flatmap(lambda base: st.binary(max_size=6).map(lambda tail: base + tail))))
    def settings_file(content: bytes) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "server.toml"
            path.write_bytes(content)
            with tally.attempt(ConfigError):
                try:
                    load_config(settings_file=str(path), environ={})
                except ConfigError as exc:
                    assert str(path) in str(exc), str(exc)

    try:
        for prop in (toml_table, environment, command_line, settings_file):
            prop()
        # The two that escaped before config.file_layer caught them (a traceback instead of
        # "appserver: error: ..."): a file that is not UTF-8, and a directory.
        with tempfile.TemporaryDirectory() as tmp:
            latin1 = Path(tmp) / "latin1.toml"
            latin1.write_bytes(b'[server]\nloglevel = "caf\xe9"\n')
            for path in (str(latin1), tmp):
                with tally.attempt(ConfigError), \
                        pytest.raises(ConfigError, match=re.escape(f"{path}: cannot read")):
                    load_config(settings_file=path, environ={})
    finally:
        reliability.record(
            "fuzz", target="server settings (ServerConfig from TOML, environment, command line)",
            tool="hypothesis", inputs=tally.inputs, escaped=tally.escaped, **{
                "documented errors": "ConfigError naming the source and key (the CLI: exit 2)"})

