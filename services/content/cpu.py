"""CPU-bound work off the event loop, when it is worth a thread.

Handing work to a thread and back costs about as much as walking a small
message (the benchmark saw a third of the content service's CPU go to
hand-offs), so work on up to `INLINE_BYTES` runs in place and only larger
work goes to a thread, where the loop keeps answering NATS meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

INLINE_BYTES = 64 * 1024


async def offload(size: int, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`work(*args, **kwargs)`, in a thread when it reads more than
    `INLINE_BYTES` (`size`)."""
    if size <= INLINE_BYTES:
        return work(*args, **kwargs)
    return await asyncio.to_thread(work, *args, **kwargs)
