"""Errors of the ser.cfg language, located at ``file:line:col``.

::

    CfgError                 a problem a user can act on (syntax, unknown
                             function, bad argument, unknown module ...)
    ScriptExit               ``exit [v]`` unwinding a running script (internal)

``str(CfgError)`` is ``FILE:LINE:COL: message`` followed by the offending
line and a caret, which is what ``ser -c`` prints.
"""

from __future__ import annotations

from sipexpress.core.registry import ConfigError


class CfgError(ConfigError):
    """A configuration error with its location in the config file."""

    def __init__(
        self,
        message: str,
        filename: str = "<config>",
        line: int = 0,
        col: int = 0,
        source_line: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.filename = filename
        self.line = line
        self.col = col
        self.source_line = source_line

    @property
    def location(self) -> str:
        if self.line:
            return f"{self.filename}:{self.line}:{self.col}"
        return self.filename

    def __str__(self) -> str:
        text = f"{self.location}: {self.message}"
        if self.source_line is not None:
            src = self.source_line.rstrip("\r\n").expandtabs(1)
            caret = " " * max(self.col - 1, 0) + "^"
            text += f"\n    {src}\n    {caret}"
        return text


class ScriptExit(Exception):
    """Raised by ``exit [v]``; the route entry point returns ``code``."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code
