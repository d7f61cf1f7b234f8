"""When the request being served reached the server: its deadline counts from there.

The HTTP layer stamps each request as the first thing the app runs (`codecomp.serve.api.arrival`), so
the time it then waits in front of the handler (a backlog on the event loop) is on its clock, and a
request that waited past its deadline is shed at once instead of computed for nobody. A context
variable carries the stamp, so nothing between the two layers needs to pass it on.
"""

from __future__ import annotations

import contextvars
import time

ARRIVED: contextvars.ContextVar[float] = contextvars.ContextVar("codecomp_arrived")


def arrival_time() -> float:
    """The `time.monotonic()` instant the current request arrived; now, for a call not stamped (a test's)."""
    return ARRIVED.get(time.monotonic())
