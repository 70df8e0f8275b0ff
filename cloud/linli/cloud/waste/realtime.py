"""The trucks as a GTFS-realtime feed: TripUpdates and VehiclePositions, so that any
transit-style app or map can show where the trucks are and when they will come."""

from __future__ import annotations

from collections.abc import Iterable

from google.transit import gtfs_realtime_pb2 as rt

from linli.cloud.waste.gtfs import service_day
from linli.cloud.waste.stops import Visit
from linli.cloud.waste.tracking import TripTracker


def feed_message(
    trackers: Iterable[TripTracker], now_s: float, trucks: dict[str, str], timezone: str
) -> bytes:
    """The whole feed (FULL_DATASET) at `now_s`; `trucks` names each route's truck."""
    message = rt.FeedMessage()
    message.header.gtfs_realtime_version = "2.0"
    message.header.incrementality = rt.FeedHeader.FULL_DATASET
    message.header.timestamp = int(now_s)
    for tracker in trackers:
        trip = tracker.trip
        day = service_day(tracker.zero_s, timezone).strftime("%Y%m%d")
        truck = trucks[trip.route_id]
        update = message.entity.add(id=f"{trip.id}@{day}").trip_update
        update.trip.trip_id = trip.id
        update.trip.route_id = trip.route_id
        update.trip.start_date = day
        update.vehicle.id = truck
        update.timestamp = int(now_s)
        for index, (visit, st) in enumerate(zip(tracker.stops.visits, trip.stop_times, strict=True)):
            if visit.state is Visit.AHEAD and index in tracker.predicted:
                stu = update.stop_time_update.add(stop_sequence=st.sequence, stop_id=st.stop_id)
                stu.arrival.time = int(tracker.predicted[index])
            elif visit.state is Visit.SKIPPED:
                stu = update.stop_time_update.add(stop_sequence=st.sequence, stop_id=st.stop_id)
                stu.schedule_relationship = rt.TripUpdate.StopTimeUpdate.SKIPPED
        if tracker.last_fix is not None:
            lat, lon, at = tracker.last_fix
            vehicle = message.entity.add(id=f"{truck}@{day}").vehicle
            vehicle.trip.trip_id = trip.id
            vehicle.trip.start_date = day
            vehicle.vehicle.id = truck
            vehicle.position.latitude = lat
            vehicle.position.longitude = lon
            vehicle.timestamp = int(at)
            nxt = tracker.stops.next_index()
            if nxt is not None:
                vehicle.stop_id = trip.stop_times[nxt].stop_id
    return bytes(message.SerializeToString())
