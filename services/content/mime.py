"""A bounded MIME walk that keeps offsets into the message, not copies.

Each part is its header fields of interest and the offsets of its body in
the one message object every rule shares. Boundaries are found with
`bytes.find`-speed searches over that object, and a part's body is handed
out as a memoryview, so walking a 25 MB message costs its header blocks and
nothing more; only a part that must be decoded (a zip to look inside) costs
its decoded size.

Bounds: the walk counts parts and nesting as it goes and raises
`MimeTooComplex` at the first part past either, so a MIME bomb (10,000
parts, 100 levels) is refused after at most `max_parts` parts of work.
A part keeps at most `max_fields` of the header fields the walk is asked
for, each cut at `max_field_bytes`: a header block made to be huge costs a
search, not memory.

Parsing follows RFC 2045 and RFC 2046 as the stdlib `email` package reads
them, including its leniency: a header block ends at its first line that
is neither a field nor a continuation; a delimiter line is `--boundary`,
optionally `--` after it, then optional white space; a multipart without a
close delimiter ends where its parent does; the line break before a
delimiter belongs to the delimiter.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from email.utils import collapse_rfc2231_value

# The fields the attachment walk reads (RFC 2045 §5, §6; RFC 2183).
FIELDS = frozenset({"content-type", "content-disposition", "content-transfer-encoding"})

# A header block ends at the first line that is neither a continuation nor
# a field (`name:`); an empty line is such a line.
_HEADER_END = re.compile(rb"^(?![ \t]|[!-9;-~]+[ \t]*:)", re.MULTILINE)
_FIELD = re.compile(rb"^([!-9;-~]+)[ \t]*:[ \t]*(.*(?:\r?\n[ \t].*)*)", re.MULTILINE)
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_ENCAPSULATING = frozenset({"message/rfc822", "message/global"})
# Encodings under which a message/rfc822 body is a message as it stands.
_IDENTITY = frozenset({"", "7bit", "8bit", "binary"})


# A parameter value as email.message returns it: a string, or (charset,
# language, value) for an RFC 2231 extended parameter.
ParamValue = str | tuple[str | None, str | None, str]


class MimeTooComplex(Exception):
    """The message has more parts or deeper nesting than the bounds allow."""


@dataclass(frozen=True, slots=True)
class MimeLimits:
    max_parts: int = 1_000
    max_depth: int = 20
    max_fields: int = 100
    max_field_bytes: int = 16 * 1024


@dataclass(frozen=True, slots=True)
class Part:
    """One MIME part: the fields the walk kept, and where its body lies in
    `message`. `depth` is 0 for the message itself."""

    message: bytes
    fields: tuple[tuple[str, str], ...]
    body_start: int
    end: int
    depth: int
    default_type: str = "text/plain"

    def get_all(self, name: str) -> list[str]:
        """The raw values of every field called `name` (lower case), folded
        as the sender wrote them."""
        return [value for key, value in self.fields if key == name]

    def get(self, name: str, default: str = "") -> str:
        values = self.get_all(name)
        return values[0] if values else default

    @property
    def content_type(self) -> str:
        """`maintype/subtype` in lower case (RFC 2045 §5.2 default)."""
        value = self.get("content-type")
        kind = value.split(";", 1)[0].strip().lower()
        return kind if kind.count("/") == 1 else self.default_type

    @property
    def encoding(self) -> str:
        return self.get("content-transfer-encoding").strip().lower()

    def param(self, name: str) -> str | None:
        """A parameter of Content-Type, RFC 2231 decoded."""
        value = self.get("content-type")
        return param(value, name) if value else None

    @property
    def body(self) -> memoryview:
        return memoryview(self.message)[self.body_start : self.end]

    @property
    def boundary(self) -> bytes | None:
        """The delimiter of a multipart with one; None otherwise."""
        if not self.content_type.startswith("multipart/"):
            return None
        boundary = self.param("boundary")
        if not boundary:
            return None  # the stdlib reads it as a single-part body too
        return boundary.encode("utf-8", "surrogateescape")

    @property
    def encapsulates(self) -> bool:
        """Whether the body is a whole message (RFC 2046 §5.2.1)."""
        kind = self.content_type
        return kind in _ENCAPSULATING and self.encoding in _IDENTITY


def params(value: str) -> list[tuple[str, ParamValue]]:
    """The parameters of a structured field value (RFC 2045 §5.1), folding
    undone (RFC 5322 §2.2.3) and RFC 2231 continuations joined; the first
    is the value itself, with an empty parameter value."""
    holder = Message()
    holder["x"] = _FOLD.sub("", value)
    found = holder.get_params(failobj=[], header="x")
    return list(found)


def param(value: str, name: str) -> str | None:
    """Parameter `name` of a structured field value, RFC 2231 decoded;
    None when absent."""
    for key, found in params(value):
        if key == name:
            return collapse_rfc2231_value(found)
    return None


def walk(
    message: bytes, limits: MimeLimits = MimeLimits(), fields: frozenset[str] = FIELDS
) -> Iterator[Part]:
    """Every part of `message`, depth first in the order written, without
    recursion. Raises MimeTooComplex at the first part past the bounds."""
    # (start, end, depth, default type) of the parts still to read
    pending: list[tuple[int, int, int, str]] = [(0, len(message), 0, "text/plain")]
    count = 0
    while pending:
        start, end, depth, default_type = pending.pop()
        count += 1
        if count > limits.max_parts:
            raise MimeTooComplex(f"more than {limits.max_parts} MIME parts")
        if depth > limits.max_depth:
            raise MimeTooComplex(f"MIME nesting deeper than {limits.max_depth}")
        part = _read_part(message, start, end, depth, default_type, limits, fields)
        yield part
        pending.extend(reversed(_children(part)))


def _read_part(
    message: bytes,
    start: int,
    end: int,
    depth: int,
    default_type: str,
    limits: MimeLimits,
    wanted: frozenset[str],
) -> Part:
    found = _HEADER_END.search(message, start, end)
    header_end = end if found is None else found.start()
    if message.startswith(b"\r\n", header_end, end):
        body_start = header_end + 2
    elif message.startswith(b"\n", header_end, end):
        body_start = header_end + 1
    else:
        body_start = header_end  # no blank line: the body starts there
    kept: list[tuple[str, str]] = []
    for field in _FIELD.finditer(message, start, header_end):
        name = field.group(1).decode("ascii").lower()
        if name not in wanted:
            continue
        if len(kept) == limits.max_fields:
            bound = limits.max_fields
            raise MimeTooComplex(f"more than {bound} header fields in a part")
        value_start, value_end = field.span(2)
        value_end = min(value_end, value_start + limits.max_field_bytes)
        raw = message[value_start:value_end].rstrip(b"\r\n")
        kept.append((name, raw.decode("utf-8", "surrogateescape")))
    return Part(message, tuple(kept), body_start, end, depth, default_type)


def _children(part: Part) -> list[tuple[int, int, int, str]]:
    if part.encapsulates:
        return [(part.body_start, part.end, part.depth + 1, "text/plain")]
    boundary = part.boundary
    if boundary is None:
        return []
    # RFC 2046 §5.1.5: a digest's parts are messages unless they say not.
    digest = part.content_type == "multipart/digest"
    inner = "message/rfc822" if digest else "text/plain"
    depth = part.depth + 1
    return [(s, e, depth, inner) for s, e in _split(part, boundary)]


def _split(part: Part, boundary: bytes) -> list[tuple[int, int]]:
    """The (start, end) of each body part between the delimiters."""
    message, end = part.message, part.end
    escaped = re.escape(boundary)
    delimiter = re.compile(rb"\n--" + escaped + rb"(--)?[ \t]*(?:\r?\n|\Z)")
    first = re.compile(rb"--" + escaped + rb"(--)?[ \t]*(?:\r?\n|\Z)")

    ranges: list[tuple[int, int]] = []
    opened: int | None = None  # where the part being read starts
    position = part.body_start
    while True:
        found = first.match(message, position, end)
        if found is not None:  # a delimiter right at the start: empty part
            content_end = found.start()
        else:
            found = delimiter.search(message, position, end)
            if found is None:
                break
            # The CRLF before the delimiter is part of it (RFC 2046 §5.1.1).
            content_end = _before_line_break(message, position, found.start() + 1)
        if opened is not None:
            ranges.append((opened, content_end))
        if found.group(1):  # the close delimiter: the epilogue follows
            return ranges
        opened = position = found.end()
    if opened is not None:
        # No close delimiter: the part ends with its parent, less the line
        # break a delimiter would have taken (the stdlib reads it so too).
        ranges.append((opened, _before_line_break(message, opened, end)))
    return ranges


def _before_line_break(message: bytes, start: int, end: int) -> int:
    """`end`, moved back over the line break that ends `message[start:end]`."""
    if end > start and message[end - 1] == 0x0A:
        end -= 1
    if end > start and message[end - 1] == 0x0D:
        end -= 1
    return end
