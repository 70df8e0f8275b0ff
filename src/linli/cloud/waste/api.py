"""The waste service's HTTP API: trips under way with their predictions, and the notices sent.

The same rules as the notifier's: a bearer token checked before a body is read, bodies
bounded, every answer in the OpenAPI document. The same tokens too, kept in the waste service's
state (`linli waste token`), with the scopes `scopes.needed` asks for; $LINLI_CLOUD_TOKEN (the
variable `token_env` names), when set, is an admin token.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import HTTPException, Path, Query, Response
from prometheus_client.core import Metric
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp

from linli.cloud.headers import Protect
from linli.cloud.notifier.guard import Guard, doc, guarded
from linli.cloud.paging import PAGED, Paged, page, rows_page
from linli.cloud.prom import add_metrics, counter, gauge
from linli.cloud.tokens import TokenBook
from linli.cloud.waste import commands
from linli.cloud.waste.booking_api import PUBLIC_PAGES, booking_routes
from linli.cloud.waste.bookings import OPEN
from linli.cloud.waste.engine import WasteEngine
from linli.cloud.waste.realtime import feed_message
from linli.cloud.waste.rollups import ZONE, Period, period_start
from linli.cloud.waste.scopes import needed
from linli.cloud.waste.trip_reports import snapshot
from linli.transit.gtfs import local_hhmm


class StopNow(BaseModel):
    stop_id: str
    state: str = Field(description="ahead, arrived, left or skipped")
    scheduled: str = Field(description="local time of the timetable")
    predicted: str | None = Field(description="local time predicted, for a stop ahead")


class TripNow(BaseModel):
    trip_id: str
    route: str
    truck: str
    waste_type: str
    next_stop: str | None
    predicted: str | None = Field(description="local time at the next stop")
    delay_min: float | None = Field(description="predicted minus scheduled at the next stop")
    progress_m: float
    stops: list[StopNow]


class Tonnage(BaseModel):
    start: str = Field(description="the period's first day, local (YYYY-MM-DD)")
    waste_type: str
    stop: str = Field(description="the compound's bin room")
    route: str
    truck: str
    lifts: int
    bins: int
    kg: float


class Replacement(BaseModel):
    model_config = ConfigDict(extra="forbid")

    truck: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


class Counts(BaseModel):
    received: int = Field(description="messages taken, good or bad")
    clock_ms: int | None = Field(
        description="the service's clock: the newest truck message's time (ms), none before the first"
    )
    handled: dict[str, int] = Field(description="messages taken, by kind")
    rejected: dict[str, int] = Field(description="messages refused, by reason")
    fixes: dict[str, int] = Field(description="positions, by what they did: matched, off_route, stale")
    following: int = Field(description="trips followed now")
    store_pending: int = Field(description="lines for the store not yet written")
    store_written: int = Field(description="lines the store has taken since the start")
    delivering: int = Field(description="deliveries under way")
    claimed: dict[str, int] = Field(description="notices and incidents this service told, by kind")
    state_errors: int = Field(description="claims that could not reach the state (each tried again)")
    state_bugs: int = Field(description="steps the state refused for a bug (a constraint violated): logged")
    waiting: int = Field(
        description="notices, incidents and failed deliveries waiting for the state to be reached"
    )
    routes: list[str] = Field(description="the routes this service follows (every route of its feed)")
    bookings_refused: dict[str, int] = Field(
        description="booking requests refused, by reason: invalid, refused, key_conflict, not_its_compound"
    )


def trip_now(trip: dict[str, Any], stops: list[dict[str, Any]], timezone: str) -> TripNow:
    """A trip as the state keeps it (`trip_reports.snapshot`)."""
    nxt = trip["next_idx"]
    here = stops[nxt] if nxt is not None and nxt < len(stops) else None
    predicted = None if here is None else here["predicted_ms"]
    return TripNow(
        trip_id=trip["trip_id"],
        route=trip["route"],
        truck=trip["truck"],
        waste_type=trip["waste_type"],
        next_stop=None if here is None else here["stop_id"],
        predicted=_local(predicted, timezone),
        delay_min=None
        if here is None or predicted is None
        else round((predicted - here["scheduled_ms"]) / 60_000, 1),
        progress_m=trip["progress_m"],
        stops=[
            StopNow(
                stop_id=s["stop_id"],
                state=s["state"],
                scheduled=_local(s["scheduled_ms"], timezone) or "",
                predicted=_local(s["predicted_ms"], timezone),
            )
            for s in stops
        ],
    )


def _local(epoch_ms: int | None, timezone: str) -> str | None:
    return None if epoch_ms is None else local_hhmm(epoch_ms / 1000, timezone)


def dispatch(service: WasteEngine, kind: str, trip_id: str, arg: str) -> str:
    """The command applied ("done")."""
    status = commands.command(service, kind, trip_id, arg)
    if not status:
        what = (
            f"no trip {trip_id}" if kind == "replace" else f"no stop {arg} still to come on a trip {trip_id}"
        )
        raise HTTPException(404, f"{what} followed now")
    return status


def app(service: WasteEngine, token: str, tokens: TokenBook | None = None) -> ASGIApp:
    """The API over one waste service; `tokens` are those made with `linli waste token`, read
    from the service's state unless given."""
    book = tokens if tokens is not None else TokenBook(service.state.engine)
    api = guarded("linli waste", "Waste collection trips, predicted arrivals and keeper notices.")
    # Every endpoint is async: it runs on the event loop that takes the trucks' messages, so
    # it sees the trips between two messages, never during one, and can start deliveries.

    @api.get("/trips")
    async def trips() -> list[TripNow]:
        """Trips followed now: each one's next stop, predicted time and delay."""
        tz = service.feed.timezone
        now = service.clock()
        return [trip_now(*snapshot(service.feed, key, t, now), tz) for key, t in service.trackers.items()]

    @api.get("/notices", responses=PAGED)
    async def notices(
        paged: Paged, day: Annotated[str | None, Query(pattern=r"^\d{4}-\d{2}-\d{2}$")] = None
    ) -> list[dict[str, Any]]:
        """The keeper notices sent, newest first; `day`: of one service day (YYYY-MM-DD)."""
        return rows_page(lambda before, n: service.state.notices(n, day, before), paged)

    @api.get("/rollups")
    async def rollups(
        period: Period = Period.DAY,
        since: Annotated[
            dt.date | None, Query(alias="from", description="the first day (YYYY-MM-DD)")
        ] = None,
    ) -> list[Tonnage]:
        """Tonnage by period, waste type, compound, route and truck, as `linli waste rollup --state`
        last kept it; from the period holding `from` (default: the last 31 days) on."""
        first = since or (dt.datetime.now(ZoneInfo(ZONE)) - dt.timedelta(days=31)).date()
        start = dt.datetime.combine(first, dt.time(), ZoneInfo(ZONE))
        begins = period_start(int(start.timestamp() * 1000), period)
        rows = service.state.rollups(period, int(begins.timestamp() * 1000))
        return [
            Tonnage(
                start=dt.datetime.fromtimestamp(r["start_ms"] / 1000, ZoneInfo(ZONE)).date().isoformat(),
                **{k: v for k, v in r.items() if k != "start_ms"},
            )
            for r in rows
        ]

    @api.get("/incidents", responses=PAGED)
    async def incidents(paged: Paged) -> list[dict[str, Any]]:
        """Blocked gates and breakdowns, oldest first; `number` is for acknowledging one."""
        found = [
            {
                "number": i["number"],
                "kind": i["kind"],
                "trip": i["trip"],
                "stop": i["stop"],
                "time_ms": i["time_ms"],
                "detail": i["detail"],
                "acknowledged": i["acked_ms"] is not None,
            }
            for i in service.state.incidents()
        ]
        return page(found, lambda i: [i["number"]], paged)

    @api.post("/trips/{trip_id}/stops/{stop_id}/skip", responses=doc(404))
    async def skip(
        trip_id: Annotated[str, Path(max_length=64)], stop_id: Annotated[str, Path(max_length=64)]
    ) -> dict[str, str]:
        """Take a stop off a trip under way (the dispatcher's call): its keeper is told."""
        return {"trip": trip_id, "skipped": stop_id, "status": dispatch(service, "skip", trip_id, stop_id)}

    @api.post("/trips/{trip_id}/stops/{stop_id}/defer", responses=doc(404))
    async def defer(
        trip_id: Annotated[str, Path(max_length=64)], stop_id: Annotated[str, Path(max_length=64)]
    ) -> dict[str, str]:
        """Move a stop to the end of a trip under way (re-sequence): its keeper hears it is
        deferred, the stops after it are predicted without it, and it is served on the way back."""
        return {"trip": trip_id, "deferred": stop_id, "status": dispatch(service, "defer", trip_id, stop_id)}

    @api.post("/incidents/{number}/ack", responses=doc(404))
    async def acknowledge(number: Annotated[int, Path(ge=0, le=2**62)]) -> dict[str, Any]:
        """The dispatcher has seen an incident (its number in GET /incidents): it is closed."""
        incident = commands.acknowledge(service, number)
        if incident is None:
            raise HTTPException(404, f"no incident {number}")
        return {"incident": number, "kind": incident["kind"], "acknowledged": True}

    @api.post("/trips/{trip_id}/replacement", responses=doc(404))
    async def replacement(trip_id: Annotated[str, Path(max_length=64)], body: Replacement) -> dict[str, str]:
        """Another truck takes the trip over after a breakdown; tracking goes on with it."""
        return {
            "trip": trip_id,
            "truck": body.truck,
            "status": dispatch(service, "replace", trip_id, body.truck),
        }

    @api.get("/failed-deliveries", responses=PAGED)
    async def failed(paged: Paged) -> list[dict[str, Any]]:
        """Notices a channel kept refusing, with the last error, oldest first."""
        return rows_page(service.state.failures, paged)

    @api.get(
        "/gtfs-rt", response_class=Response, responses={200: {"content": {"application/x-protobuf": {}}}}
    )
    async def realtime() -> Response:
        """The trips and trucks now as GTFS-realtime (TripUpdates and VehiclePositions), protobuf."""
        trucks = {rid: r.truck for rid, r in service.feed.routes.items()}
        body = feed_message(service.trackers.values(), service.now_s, trucks, service.feed.timezone)
        return Response(body, media_type="application/x-protobuf")

    booking_routes(api, service)

    def families() -> list[Metric]:
        bookings: Counter[str] = Counter()
        if service.renovation is not None:
            bookings.update(str(b.state) for b in service.renovation.bookings.all(OPEN))
        return [
            counter("linli_waste_messages", "Truck messages taken, good or bad", service.received),
            counter("linli_waste_handled", "Truck messages, by kind", dict(service.handled), "kind"),
            counter(
                "linli_waste_rejected", "Truck messages refused, by reason", dict(service.rejected), "reason"
            ),
            counter("linli_waste_fixes", "Positions, by what they did", dict(service.fixes), "outcome"),
            gauge("linli_waste_trips_followed", "Trips followed now", len(service.trackers)),
            gauge(
                "linli_waste_store_pending_lines",
                "Lines for the store not yet written",
                service.outbox.pending(),
            ),
            counter("linli_waste_store_written_lines", "Lines the store took", service.outbox.written),
            gauge(
                "linli_waste_deliveries_under_way", "Notices being delivered", service.deliveries.under_way
            ),
            gauge("linli_waste_bookings_open", "Renovation bookings open, by state", dict(bookings), "state"),
            counter(
                "linli_waste_bookings_refused",
                "Booking requests refused, by reason",
                dict(service.bookings_refused),
                "reason",
            ),
        ]

    add_metrics(api, families)

    @api.get("/health")
    async def health() -> dict[str, int]:
        """In one look: trips followed, messages taken and refused, lines waiting for the store."""
        return {
            "trips_followed": len(service.trackers),
            "messages": service.received,
            "rejected": sum(service.rejected.values()),
            "store_pending": service.outbox.pending(),
            "delivering": service.deliveries.under_way,
        }

    @api.get("/stats")
    async def stats() -> Counts:
        return Counts(
            received=service.received,
            clock_ms=round(service.now_s * 1000) if service.now_s else None,
            handled=dict(service.handled),
            rejected=dict(service.rejected),
            fixes=dict(service.fixes),
            following=len(service.trackers),
            store_pending=service.outbox.pending(),
            store_written=service.outbox.written,
            delivering=service.deliveries.under_way,
            claimed=dict(service.claimed),
            state_errors=service.state_errors,
            state_bugs=service.state_bugs,
            waiting=service.waiting,
            routes=sorted(service.feed.routes),
            bookings_refused=dict(service.bookings_refused),
        )

    return Protect(Guard(api, token, public=PUBLIC_PAGES, book=book, need=needed))
