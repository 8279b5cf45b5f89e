"""Perimeter's exceptions.

    PerimeterError
     ├── BusError                 NATS could not carry a request
     │    └── VerdictTimeout      no verdict within the stage's time budget
     ├── DependencyUnavailable    DNS, clamd or a route did not answer
     └── InvalidEntry             a list entry or setting that does not validate

Errors from the libraries below are translated at the boundary with
`raise ... from exc`, so callers handle these and nothing else.
"""


class PerimeterError(Exception):
    """Base of every error Perimeter raises on purpose."""


class BusError(PerimeterError):
    """NATS could not carry a request or a publish."""


class VerdictTimeout(BusError):
    """No service answered within the stage's time budget."""


class DependencyUnavailable(PerimeterError):
    """A check's dependency (DNS, clamd, a route) is down or too slow."""


class InvalidEntry(PerimeterError, ValueError):
    """A list entry or a setting that does not validate; the text says why."""
