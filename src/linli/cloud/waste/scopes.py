"""Which scope each request to the waste API needs (the notifier's tokens, `linli.cloud.tokens`).

`book` (a booking link) reaches the bookings and the compounds, and the handlers narrow it to
its own office and compounds; `read` the rest of what can be read; `ack` acknowledging an
incident; `admin` the dispatcher's commands (skip, defer, replacement) and everything else.
"""

from __future__ import annotations

from linli.cloud.scope import Scope
from linli.cloud.tokens import Holder, rules

# The scope a request to the waste API needs.
needed = rules("/incidents/", booking=("/bookings", "/compounds"))


def may_change_any(holder: Holder) -> bool:
    """Booking and cancelling take a booking link (for its own office) or `admin`: a `read` or
    `ack` token may look at the bookings, not change them."""
    return holder.scope is Scope.ADMIN


def owns(holder: Holder, office: str | None) -> bool:
    """Whether a booking of `office` is the holder's to see and cancel (every one, for an unbound token)."""
    return holder.office is None or holder.office == office
