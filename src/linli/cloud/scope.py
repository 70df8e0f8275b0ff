"""The scopes of the APIs' tokens, apart from the tokens' store so that the command line can name
them without importing the database layer (the edge box's base install has none)."""

from __future__ import annotations

from enum import StrEnum


class Scope(StrEnum):
    BOOK = "book"  # the waste service's booking links: below `read`, and bound (`Holder.office`)
    READ = "read"
    ACK = "ack"
    ADMIN = "admin"

    def allows(self, needed: Scope) -> bool:
        order = list(Scope)
        return order.index(self) >= order.index(needed)
