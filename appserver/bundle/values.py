"""Value types of the settings file: nginx sizes, and strings safe to print into nginx.conf.

Strings that templates print into nginx.conf or a shell command are validated here, so a value
can never end a directive, start an nginx variable or split a header line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field

_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_size(value: Any) -> Any:
    """nginx's size syntax: bytes as an integer, or a string such as "512", "8k", "10m", "1g"."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 8k, 10m or 1g")
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)\s*", value)
        if not match:
            raise ValueError(f"{value!r} is not a size such as 512, 8k, 10m or 1g")
        return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
    return value


def format_size(size: int) -> str:
    """Bytes in nginx's (and compose's) shortest exact unit: 10485760 -> "10m"."""
    for unit in ("g", "m", "k"):
        if size and size % _SIZE_UNITS[unit] == 0:
            return f"{size // _SIZE_UNITS[unit]}{unit}"
    return str(size)


Size = Annotated[int, BeforeValidator(parse_size), Field(ge=0)]

# Strings printed into nginx.conf or a shell command: no quotes, no whitespace, no ';{}$' that
# would end a directive or start a variable.
PLAIN = re.compile(r"[^\s;{}$'\"\\#]+")
HEADER_NAME = re.compile(r"[A-Za-z0-9!#%&'*+.^_`|~-]+")  # RFC 9110 §5.6.2 token
HOSTNAME = re.compile(r"(\*\.|\.)?([A-Za-z0-9-]+\.)*[A-Za-z0-9-]+(\.\*)?")


def relative_inside(value: str, what: str) -> str:
    """Paths the Docker build copies must sit inside the project (the build context)."""
    path = Path(value)
    if path.is_absolute() or ".." in path.parts:
        raise ValueError(f"{value!r} must be a path relative to the settings file, inside the "
                         f"project directory (the Docker build context copies {what} from it)")
    if not PLAIN.fullmatch(value):
        raise ValueError(f"{value!r} must not contain whitespace, quotes or ;{{}}$#")
    return value


def header_value(value: str) -> str:
    # nginx has no escape for "$" inside add_header (it starts a variable), and CR/LF would split
    # the header.
    if any(ch in value for ch in "$\r\n\"\\"):
        raise ValueError(f"{value!r}: header values must not contain $, quotes, backslashes or "
                         "line breaks")
    return value


def location(value: str) -> str:
    if not value.startswith("/") or not PLAIN.fullmatch(value):
        raise ValueError(f"{value!r} is not a URL path starting with / (no whitespace, quotes or "
                         ";{}$#)")
    return value


Strict = ConfigDict(extra="forbid", frozen=True, validate_default=True)
Location = Annotated[str, AfterValidator(location)]
