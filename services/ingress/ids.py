"""Session and queue ids: unique, not secret.

A session id names a session in the logs; a queue id names a message in
the 250 reply, the queue and the decision records. Nothing is protected by
their being hard to guess, so they come from a generator seeded once from
the operating system rather than from a system call per id. 48 and 64
random bits keep them unique across replicas and restarts.
"""

from __future__ import annotations

import random

_source = random.Random()  # seeded from os.urandom


def session_id() -> str:
    return f"{_source.getrandbits(48):012x}"


def queue_id() -> str:
    return f"{_source.getrandbits(64):016X}"
