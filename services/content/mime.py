"""A bounded MIME parse: the message tree, or `MimeTooComplex`.

The stdlib feed parser builds one `Message` per part and nests a generator
per level of multipart nesting, so an unbounded parse of a crafted message
costs memory per part and hits the recursion limit near 1,000 levels. Here
the parser counts parts and depth as it creates them and stops at the first
one over the bound, so a MIME bomb (10,000 parts, 100 levels) is refused
after at most `max_parts` parts of work.

Memory: the message is fed in 64 KB chunks from a memoryview, and the tree
keeps one copy of it, as the parts' payload strings. While a part is read,
the stdlib parser also holds that part's lines in a list, about 1.7 times
the part's size, so a message made of one large attachment peaks near 2.7
times its size for as long as that part is parsed. Removing that peak takes
a walker that keeps offsets into the message instead of payload strings.
"""

from __future__ import annotations

import email.policy
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from email.feedparser import BytesFeedParser
from email.message import Message

log = logging.getLogger(__name__)

_CHUNK = 64 * 1024
# compat32 never raises on defects (RFC 5322 violations are recorded on the
# part) and keeps header values as the raw strings the sender wrote.
_POLICY = email.policy.compat32


class MimeTooComplex(Exception):
    """The message has more parts or deeper nesting than the bounds allow."""


@dataclass(frozen=True, slots=True)
class MimeLimits:
    max_parts: int = 1_000
    max_depth: int = 20


class _BoundedParser(BytesFeedParser):
    """A feed parser that refuses to create parts past the bounds.

    It overrides `_new_message`, the one place the stdlib feed parser creates
    a part; its stack of open parts gives the nesting depth.
    """

    def __init__(self, limits: MimeLimits) -> None:
        super().__init__(policy=_POLICY)
        self._limits = limits
        self.parts = 0

    def _new_message(self) -> None:
        self.parts += 1
        if self.parts > self._limits.max_parts:
            raise MimeTooComplex(f"more than {self._limits.max_parts} MIME parts")
        open_parts: list[Message] = self._msgstack  # type: ignore[attr-defined]
        # The new part's depth is the number of parts open above it.
        if len(open_parts) > self._limits.max_depth:
            raise MimeTooComplex(f"MIME nesting deeper than {self._limits.max_depth}")
        super()._new_message()  # type: ignore[misc]


def parse(message: bytes, limits: MimeLimits = MimeLimits()) -> Message:
    """Parse `message` (CRLF line ends) into its MIME tree, within `limits`."""
    parser = _BoundedParser(limits)
    view = memoryview(message)
    try:
        for start in range(0, len(view), _CHUNK):
            parser.feed(bytes(view[start : start + _CHUNK]))
        return parser.close()
    except RecursionError as exc:
        # Only reachable when max_depth is set near the interpreter's limit.
        raise MimeTooComplex("MIME nesting exhausted the parser") from exc


def walk(root: Message) -> Iterator[Message]:
    """Every part of the tree, depth first, without recursion."""
    stack = [root]
    while stack:
        part = stack.pop()
        yield part
        children = part.get_payload() if part.is_multipart() else []
        if isinstance(children, list):
            stack.extend(
                child for child in reversed(children) if isinstance(child, Message)
            )
