"""The trucks as a GTFS-realtime feed: TripUpdates and VehiclePositions, so that any
transit-style app or map can show where the trucks are and when they will come.

Each stop ahead has a predicted arrival and departure (the timetable's dwell after it), as
stop_times.txt gives both; a trip with nothing left ahead has no TripUpdate, which the
specification requires to hold a stop. `tests/cloud/waste/test_gtfs_realtime.py` runs an outside
validator (`gtfs-rt-validator`) over a simulated morning."""

from __future__ import annotations

from collections.abc import Iterable

from google.transit import gtfs_realtime_pb2 as rt

from linli.cloud.waste.tracking import TripTracker
from linli.transit.gtfs import service_day
from linli.transit.stops import Visit


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
        update = rt.TripUpdate()
        update.trip.trip_id = trip.id
        update.trip.route_id = trip.route_id
        update.trip.start_date = day
        update.trip.schedule_relationship = rt.TripDescriptor.SCHEDULED
        update.vehicle.id = truck
        update.timestamp = int(now_s)
        for index, (visit, st) in enumerate(zip(tracker.stops.visits, trip.stop_times, strict=True)):
            if visit.state is Visit.AHEAD and index in tracker.predicted:
                stu = update.stop_time_update.add(stop_sequence=st.sequence, stop_id=st.stop_id)
                stu.schedule_relationship = rt.TripUpdate.StopTimeUpdate.SCHEDULED
                # Both times, as stop_times.txt gives both: the timetable's dwell after the arrival.
                stu.arrival.time = int(tracker.predicted[index])
                stu.departure.time = int(tracker.predicted[index]) + (st.departure_s - st.arrival_s)
            elif visit.state is Visit.SKIPPED:
                stu = update.stop_time_update.add(stop_sequence=st.sequence, stop_id=st.stop_id)
                stu.schedule_relationship = rt.TripUpdate.StopTimeUpdate.SKIPPED
        if update.stop_time_update:  # nothing ahead (back at the depot): no update is due
            message.entity.add(id=f"{trip.id}@{day}").trip_update.CopyFrom(update)
        if tracker.last_fix is not None:
            lat, lon, at = tracker.last_fix
            vehicle = message.entity.add(id=f"{truck}@{day}").vehicle
            vehicle.trip.trip_id = trip.id
            vehicle.trip.start_date = day
            vehicle.trip.schedule_relationship = rt.TripDescriptor.SCHEDULED
            vehicle.vehicle.id = truck
            vehicle.position.latitude = lat
            vehicle.position.longitude = lon
            vehicle.timestamp = int(at)
            nxt = tracker.stops.next_index()
            if nxt is not None:
                vehicle.stop_id = trip.stop_times[nxt].stop_id
    return bytes(message.SerializeToString())
