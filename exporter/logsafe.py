"""Log lines that cannot be forged: every control character of a logged message is escaped.

Values from requests (an alert's name, a label, a path) reach log messages. A newline in
one would start a line of its own, e.g. a made-up "WARNING ... refused" entry, and an ANSI
escape could rewrite what a terminal shows. The formatter escapes control characters and
the Unicode line and paragraph separators of the whole message (`\\n` becomes the two
characters backslash and n), so one record is always one line. Tracebacks, which the
formatter adds after the message, keep their lines.
"""

from __future__ import annotations

import logging
import unicodedata
from typing import TextIO

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_ESCAPED = frozenset({"Cc", "Zl", "Zp"})
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_controls(text: str) -> str:
    """text with each control or line-separator character written as an escape."""
    if text.isprintable():
        return text
    return "".join(_NAMED.get(ch) or (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else
                                      f"\\u{ord(ch):04x}")
                   if unicodedata.category(ch) in _ESCAPED else ch for ch in text)


class EscapingFormatter(logging.Formatter):
    """A Formatter whose message part never holds a control character."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        """The formatted line, with record.message escaped (the record itself untouched)."""
        original = record.message
        record.message = escape_controls(original)
        try:
            return super().formatMessage(record)
        finally:
            record.message = original


def configure_logging(level: str | int, stream: TextIO) -> None:
    """Root logging to `stream` at `level`, through the escaping formatter."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(EscapingFormatter(FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
