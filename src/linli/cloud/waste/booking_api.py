"""The renovation bookings' part of the waste API: book, follow, cancel, and the page to do it.

The page (`GET /book`; its script, style and texts under `/book/`) holds no data and needs no
token; the link property staff open carries the token after `#token=`, and the page sends it
with every call it makes. That token is a booking link (`book`): bound to an office and its
compounds, it books at those compounds and sees and cancels its office's bookings only;
another office's booking is "not found" to it. Booking and cancelling otherwise take `admin`;
`read` and `ack` tokens may only look.

A refusal answers `{"detail": ..., "code": ...}`: the detail for people reading logs, the code
stable, for the page to say it in its reader's language (`booking.error.<code>` in the catalog).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

from linli.catalog import simtime
from linli.catalog.i18n import DEFAULT_LOCALE, LOCALES, Locale, catalog
from linli.catalog.ratelog import RateLimitedLog
from linli.cloud import paging
from linli.cloud.headers import page_csp
from linli.cloud.notifier.guard import doc, invalid, validation_detail
from linli.cloud.paging import PAGED, Paged
from linli.cloud.problems import problem_response
from linli.cloud.scope import Scope
from linli.cloud.tokens import Holder
from linli.cloud.waste.bookings import OPEN, Booking, BookingError, BookingRequest, KeyConflictError, State
from linli.cloud.waste.engine import WasteEngine
from linli.cloud.waste.renovation import Renovation
from linli.cloud.waste.scopes import may_change_any, owns
from linli.transit.gtfs import Feed, local_hhmm
from linli.transit.names import stop_name, truck_name

STATIC = FilePath(__file__).parent / "static"
PAGE = STATIC / "book.html"
# The page's own files, apart so that a strict Content-Security-Policy ('self') allows them.
ASSETS = {"book.js": "text/javascript", "book.css": "text/css"}
PUBLIC_PAGES = frozenset({"/book", "/book/messages", "/book/clock", *(f"/book/{name}" for name in ASSETS)})
# The model's refusals the page names; any other is `invalid`.
INVALID_CODES = {"mobile": "phone_invalid", "window_empty": "window_empty"}
log = logging.getLogger(__name__)


class Refused(HTTPException):
    """An answer of the bookings' API that is not a yes: `code` stable, `detail` for logs."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(status, detail)
        self.code = code


async def refused_json(request: Request, exc: Exception) -> JSONResponse:
    """A refusal as a problem, with its stable `code` (the page's message) beside the detail."""
    assert isinstance(exc, Refused)
    return problem_response(exc.status_code, exc.detail, request.url.path, code=exc.code)


def invalid_code(exc: RequestValidationError) -> str:
    """The code of a booking the models refuse: the first problem's, if the page names it."""
    for error in exc.errors():
        if error["type"] in INVALID_CODES:
            return INVALID_CODES[error["type"]]
        if tuple(error["loc"][1:2]) == ("contact",):
            return "contact_invalid"
    return "invalid"


def _renovation(service: WasteEngine) -> Renovation:
    if service.renovation is None:
        raise Refused(404, "unavailable", "this timetable has no [renovation] trucks: nothing to book")
    return service.renovation


def holder_of(request: Request, *, changing: bool) -> Holder:
    """Who asks; for booking or cancelling (`changing`), a booking link or an admin token."""
    holder: Holder = request.state.holder
    if changing and holder.scope is not Scope.BOOK and not may_change_any(holder):
        raise Refused(
            403,
            "not_allowed",
            f"token '{holder.name}' has scope '{holder.scope}': booking takes a booking link or admin",
        )
    return holder


class Refusals:
    """Booking requests refused: counted (the service's `/stats` and `/metrics`), logged once a
    minute per reason and token, and answered with what was wrong."""

    def __init__(self, counts: Counter[str]) -> None:
        self.counts = counts
        self._log = RateLimitedLog(log)

    def __call__(
        self, request: Request, status: int, reason: str, detail: str, code: str | None = None
    ) -> Refused:
        """Count and log a refusal by `reason`; the answer's `code` is the reason unless given."""
        holder: Holder = request.state.holder
        self.counts[reason] += 1
        self._log.log(
            reason, holder.name, "waste: a booking by '%s' refused (%s): %s", holder.name, reason, detail
        )
        return Refused(status, code or reason, detail)

    async def invalid(self, request: Request, exc: Exception) -> JSONResponse:
        """A request the models refuse (422): a booking's is counted too."""
        if (
            request.method == "POST"
            and request.url.path == "/bookings"
            and isinstance(exc, RequestValidationError)
        ):
            self(request, 422, "invalid", validation_detail(exc)[:300])
            return await invalid(request, exc, code=invalid_code(exc))
        return await invalid(request, exc)


def booking_routes(api: FastAPI, service: WasteEngine) -> None:
    """Add the bookings' endpoints to the waste API."""

    def renovation() -> Renovation:
        return _renovation(service)

    refused = Refusals(service.bookings_refused)
    api.add_exception_handler(RequestValidationError, refused.invalid)
    api.add_exception_handler(Refused, refused_json)

    def booking_json(booking: Booking) -> dict[str, Any]:
        predicted = renovation().predicted.get(booking.id) if booking.state in OPEN else None
        when = None if predicted is None else local_hhmm(predicted, service.feed.timezone)
        at_ms = None if predicted is None else round(predicted * 1000)
        trail = renovation().bookings.trail(booking.id)
        return booking.to_json() | {
            "predicted": when,
            "predicted_ms": at_ms,
            "trail": trail,
            # The page names the place and the truck as people know them, in either language.
            "compound_names": names(service.feed, booking.compound, stop_name),
            "truck_names": names(service.feed, booking.truck, truck_name) if booking.truck else None,
        }

    def own(holder: Holder, booking_id: str) -> Booking:
        """The booking, if it is the holder's to see: another office's is not found, as a missing one."""
        found = renovation().bookings.get(booking_id)
        if found is None or not owns(holder, found.office):
            raise Refused(404, "not_found", f"no booking {booking_id}")
        return found

    @api.post("/bookings", status_code=201, responses=doc(404, 409) | {200: {"description": "booked before"}})
    async def book(body: BookingRequest, request: Request, response: Response) -> dict[str, Any]:
        """Book a renovation pickup (property staff); the same `key` books once (409: the key
        was used for a different booking)."""
        holder = holder_of(request, changing=True)
        if holder.scope is Scope.BOOK and body.compound not in holder.compounds:
            mine = ", ".join(sorted(holder.compounds))
            raise refused(
                request, 403, "not_its_compound", f"this link books at {mine} only, not {body.compound}"
            )
        try:
            booking, new = renovation().book(body, service.clock(), holder.name, holder.office)
        except KeyConflictError as exc:
            raise refused(request, 409, "key_conflict", str(exc)) from None
        except BookingError as exc:
            raise refused(request, 422, "refused", str(exc), exc.code) from None
        if not new:
            response.status_code = 200
        return booking_json(booking)

    @api.get("/bookings", responses=PAGED)
    async def bookings(
        request: Request, paged: Paged, state: Annotated[str | None, Query(pattern="^[a-z_]{1,20}$")] = None
    ) -> list[dict[str, Any]]:
        """The bookings the token may see (a link: its office's), oldest first; `state`: of one only."""
        holder = holder_of(request, changing=False)
        found = [
            b.to_json()
            for b in renovation().bookings.all()
            if owns(holder, b.office) and (state is None or str(b.state) == state)
        ]
        return paging.page(found, lambda b: [b["created_ms"], b["id"]], paged)

    @api.get("/bookings/{booking_id}", responses=doc(404))
    async def booking(booking_id: Annotated[str, Path(max_length=64)], request: Request) -> dict[str, Any]:
        """A booking, its truck and predicted time, and its trail: every step, who and when."""
        return booking_json(own(holder_of(request, changing=False), booking_id))

    @api.post("/bookings/{booking_id}/cancel", responses=doc(404, 409))
    async def cancel(booking_id: Annotated[str, Path(max_length=64)], request: Request) -> dict[str, Any]:
        """Cancel a booking before the truck is there (409 once it has arrived)."""
        holder = holder_of(request, changing=True)
        own(holder, booking_id)
        try:
            return booking_json(renovation().cancel(booking_id, service.clock(), holder.name))
        except BookingError as exc:
            raise Refused(409, exc.code, str(exc)) from None

    supervision_routes(api, service)
    page_routes(api, service)

    @api.get("/compounds")
    async def compounds(request: Request) -> list[dict[str, Any]]:
        """The compounds a pickup can be booked at (a link: its own)."""
        holder = holder_of(request, changing=False)
        depots = set(service.feed.extras.depots)
        return [
            {"id": s.id, "name": s.name, "names": {locale: s.name_in(locale) for locale in LOCALES}}
            for s in service.feed.stops.values()
            if s.id not in depots and (holder.scope is not Scope.BOOK or s.id in holder.compounds)
        ]


def names(feed: Feed, thing: str, name: Callable[[Feed, str, Locale], str]) -> dict[str, str]:
    """A stop's or a truck's name in every locale, for a page that switches language itself."""
    return {locale: name(feed, thing, locale) for locale in LOCALES}


def page_routes(api: FastAPI, service: WasteEngine) -> None:
    """The booking page, its files, its texts and its clock: no data, no token."""

    @api.get("/book", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        """The booking page property staff open from a link; the link carries the token."""
        html = PAGE.read_text(encoding="utf-8")
        return HTMLResponse(html, headers={"Content-Security-Policy": page_csp(html)})

    @api.get("/book/messages", include_in_schema=False)
    async def messages(locale: Locale = DEFAULT_LOCALE) -> dict[str, str]:
        """The page's texts in `locale` (its `booking.*` keys): `{name}` placeholders left to fill."""
        return {key: value for key, value in catalog(locale).items() if key.startswith("booking.")}

    @api.get("/book/clock", include_in_schema=False)
    async def clock() -> dict[str, float]:
        """The service's time, against which a window is checked, and how fast it runs: the
        page proposes windows from it, not from the phone's clock (a demo's runs faster)."""
        shared = simtime.installed()
        return {"now_ms": round(service.clock() * 1000), "rate": shared.scale if shared else 1.0}

    @api.get("/book/{name}", include_in_schema=False, responses=doc(404))
    async def asset(name: Annotated[str, Path(max_length=16)]) -> FileResponse:
        """The page's script and style, by name: nothing else of the folder."""
        if name not in ASSETS:
            raise HTTPException(404, f"no {name}")
        return FileResponse(STATIC / name, media_type=ASSETS[name])


def supervision_routes(api: FastAPI, service: WasteEngine) -> None:
    """The dispatcher's view of the renovation trucks and their bookings (`read`)."""

    @api.get("/renovation")
    async def supervision() -> dict[str, Any]:
        """The dispatcher's view: each truck's round, the bookings at risk, the service level."""
        r, now = _renovation(service), service.clock()
        every = r.bookings.all()
        # Each booking's first time in each state, from its trail, read once.
        firsts: dict[str, dict[str, int]] = {}
        for b in every:
            steps: dict[str, int] = {}
            for t in r.bookings.trail(b.id):
                steps.setdefault(t["state"], t["at_ms"])
            firsts[b.id] = steps
        offered = [b for b in every if "offered" in firsts[b.id]]
        quick = sum(
            "accepted" in firsts[b.id]
            and firsts[b.id]["accepted"] - firsts[b.id]["offered"] <= r.accept_s * 1000
            for b in offered
        )
        done = [b for b in every if b.state in (State.COLLECTED, State.CLOSED, State.EXPIRED)]
        in_window = sum(
            "collected" in firsts[b.id]
            and b.earliest_s * 1000 <= firsts[b.id]["collected"] <= b.latest_s * 1000
            for b in done
        )
        return {
            "trucks": [
                {
                    "truck": tid,
                    "load_m3": round(r.load[tid], 2),
                    "round": [
                        {"booking": bid, "predicted": local_hhmm(at, service.feed.timezone)}
                        for bid, at in r.plan.rounds.get(tid, [])
                    ],
                }
                for tid in r.trucks
            ],
            "by_state": {str(s): sum(b.state is s for b in every) for s in State},
            "at_risk": r.at_risk(now),
            "accepted_in_time": round(quick / len(offered), 3) if offered else None,
            "collected_in_window": round(in_window / len(done), 3) if done else None,
        }
