"""When a truck will reach each of its upcoming stops.

The prediction is built from three things:

- segment travel times learned from the history, per route, segment and hour of the day
  (the evening rush is slower than mid-morning), each shrunk towards a prior: the timetable's
  time scaled by the hour's traffic on every route, itself shrunk towards the city's usual rush
  (RUSH_PRIOR), and by the segment's own road factor learned at every hour (a late departure
  drives a segment at an hour it has few samples of). A fresh service thus starts from the
  timetable and the hour's traffic and moves smoothly as it learns, instead of jumping from one
  source to the next at a count of samples (which sent a correction per notice: 30 notices,
  30 corrections);
- when the truck leaves the depot: on time at the earliest, or, once the history has seen
  enough departures, the delay that best fits the window a keeper is promised, among the
  departures later than the truck already is (a truck still parked past its time is late);
- today's traffic: how much slower or faster than expected every segment of every trip has been
  today (rain, an accident on the ring road slow every road of a day), shrunk towards 1;
- the trip's own pace so far, against today's: how much slower or faster than expected its finished segments
  took, carried forward, but shrunk towards 1 while it rests on few segments (one slow
  junction is not a slow day);
- dwell from the bins: seconds per stop and per bin, fitted to the stops served so far.

TheTransitClock keeps historical averages and smooths each segment with a Kalman filter;
here the trip-level pace does that job across segments, since a day's traffic slows every
segment of a trip together. Times are the messages' own, so a day simulated fast predicts
like a real one.

Each arrival and departure a trip's state takes is also kept as a `Step` (`TripState.steps`):
the service writes them to its state, so that a restarted service learns the same history
again (`History.learn`) and resumes a trip under way with its pace (`TripState.restore`).
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from linli.transit.gtfs import Trip
from linli.transit.stops import StopEvent, Visit

# Seconds of expected travel that pull the trip's pace towards 1: little evidence, little pace.
PACE_PRIOR_S = 600.0
# How many observations the prior of a segment at an hour (its road's factor by the hour's
# traffic) weighs.
SEGMENT_PRIOR_N = 1.0
# How many observations 1 weighs in a road's factor, learned at every hour.
ROAD_PRIOR_N = 1.0
# How many observations the city's usual rush weighs in the hour's traffic.
HOUR_PRIOR_N = 5.0
# Driven over scheduled by local hour in a city's usual traffic: a fresh service's guess before
# it has learned the district's own (Shanghai's morning and evening peaks).
RUSH_PRIOR = {7: 1.3, 8: 1.4, 9: 1.15, 17: 1.3, 18: 1.4, 19: 1.15}
# Departures seen before they tell when a truck leaves.
MIN_DEPARTURES = 10
# A notice is on time with a lead of 13 to 18 minutes for 15: 2 minutes early to 3 late.
WINDOW_S = (120.0, 180.0)
# A notice goes AIM_S before its nominal lead, so that the predicted arrival sits in the middle
# of that window, HALF_WINDOW_S from either edge: with the error spread about evenly either side
# of the prediction, the arrival falls in the window most often there (issue 34).
AIM_S = (WINDOW_S[1] - WINDOW_S[0]) / 2
HALF_WINDOW_S = (WINDOW_S[0] + WINDOW_S[1]) / 2
# Seconds of expected travel that pull today's factor (every road, every trip so far) towards 1.
DAY_PRIOR_S = 1200.0
# A stop left this long after arriving was not a dwell: a blocked gate the truck came back
# to, a breakdown, a break. Learning it would make every later stop look later.
MAX_DWELL_S = 900.0


@dataclass
class History:
    """What finished trips taught: segment times by hour, and dwell by bins."""

    timezone: str = "Asia/Shanghai"
    _segments: dict[tuple[str, int, int], list[float]] = field(default_factory=lambda: defaultdict(list))
    # Driven over scheduled, by hour, across every route: the hour's traffic, learned first.
    _hours: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    # Driven over scheduled by the hour's traffic then, by route and segment, at every hour: the
    # road's own factor (a narrow street is slow at any hour).
    _roads: dict[tuple[str, int], list[float]] = field(default_factory=lambda: defaultdict(list))
    # Least squares of dwell = a + b * bins: n, sum x, sum y, sum xx, sum xy.
    _dwell: list[float] = field(default_factory=lambda: [0.0] * 5)
    _departures: list[float] = field(default_factory=list)  # left minus due, s, the last 200
    # Driven and expected seconds of every segment by service day: today's traffic on every road.
    _days: dict[float, list[float]] = field(default_factory=dict)
    # Worked out once, not at each of a prediction's segments: the hour's traffic, until a
    # segment of that hour is learned; the local hour of each hour of UTC time, where the
    # zone's offset is whole hours all through it.
    _traffic: dict[int, float] = field(default_factory=dict, repr=False, compare=False)
    _road: dict[tuple[str, int], float] = field(default_factory=dict, repr=False, compare=False)
    _local_hours: dict[float, int] = field(default_factory=dict, repr=False, compare=False)

    def hour(self, time_s: float) -> int:
        """The local hour at `time_s`, as `datetime.fromtimestamp` gives it."""
        start = time_s // 3600 * 3600
        hour = self._local_hours.get(start)
        # Within a microsecond of the hour's end, fromtimestamp may round up into the next.
        if hour is not None and time_s - start < 3600 - 1e-3:
            return hour
        zone = ZoneInfo(self.timezone)
        first = dt.datetime.fromtimestamp(start, zone)
        offset = first.utcoffset()
        # Transitions fall on whole seconds: none in (start, start + 3600) if the hour's last
        # second has its first one's offset.
        last = dt.datetime.fromtimestamp(start + 3599, zone).utcoffset()
        if offset is not None and offset == last and offset % dt.timedelta(hours=1) == dt.timedelta(0):
            self._local_hours[start] = first.hour
        return dt.datetime.fromtimestamp(time_s, zone).hour

    def add_segment(self, route: str, index: int, left_s: float, arrived_s: float, scheduled: float) -> None:
        """A segment driven: from leaving stop `index - 1` to arriving at stop `index`."""
        hour = self.hour(left_s)
        samples = self._segments[(route, index, hour)]
        samples.append(arrived_s - left_s)
        del samples[:-30]  # the last month of this trip's days: old roadworks are forgotten
        road = self._roads[(route, index)]
        road.append((arrived_s - left_s) / (scheduled * self._hour_traffic(hour)))
        del road[:-60]
        self._road.pop((route, index), None)
        ratios = self._hours[hour]
        ratios.append((arrived_s - left_s) / scheduled)
        del ratios[:-500]
        self._traffic.pop(hour, None)

    def segment(self, route: str, index: int, leave_s: float, scheduled: float) -> float:
        """Expected seconds for a segment left at `leave_s`: its own history at that hour, shrunk
        towards the timetable's time scaled by the hour's traffic on every route and by its
        road's factor learned at every hour (a segment is driven at several hours, a late
        departure moves it to another: few samples at any one)."""
        hour = self.hour(leave_s)
        road = self._road.get((route, index))
        if road is None:
            ratios = self._roads.get((route, index), [])
            road = (sum(ratios) + ROAD_PRIOR_N) / (len(ratios) + ROAD_PRIOR_N)
            self._road[(route, index)] = road
        prior = scheduled * self._hour_traffic(hour) * road
        samples = self._segments.get((route, index, hour), [])
        return (sum(samples) + SEGMENT_PRIOR_N * prior) / (len(samples) + SEGMENT_PRIOR_N)

    def _hour_traffic(self, hour: int) -> float:
        """Driven over scheduled at that hour on every route, shrunk towards the city's rush."""
        traffic = self._traffic.get(hour)
        if traffic is None:
            ratios = self._hours.get(hour, [])
            traffic = (sum(ratios) + HOUR_PRIOR_N * RUSH_PRIOR.get(hour, 1.0)) / (len(ratios) + HOUR_PRIOR_N)
            self._traffic[hour] = traffic
        return traffic

    def add_day(self, zero_s: float, expected_s: float, driven_s: float) -> None:
        sums = self._days.setdefault(zero_s, [0.0, 0.0])
        sums[0] += expected_s
        sums[1] += driven_s
        for old in [z for z in self._days if z < zero_s - 3 * 86400]:
            del self._days[old]

    def day(self, zero_s: float) -> float:
        """Today's roads against the history, from every trip driven today so far, shrunk to 1."""
        expected, driven = self._days.get(zero_s, (0.0, 0.0))
        return (driven + DAY_PRIOR_S) / (expected + DAY_PRIOR_S)

    def add_departure(self, late_s: float) -> None:
        self._departures.append(late_s)
        del self._departures[:-200]

    def departure(self, due_s: float, now_s: float) -> float:
        """When a truck due to leave at `due_s` and not yet gone at `now_s` leaves: of the delays
        seen later than it already is, the one whose notice window (aimed, HALF_WINDOW_S either
        side) holds the most of them."""
        late = now_s - due_s
        seen = sorted(d for d in self._departures if d > late)
        if len(self._departures) < MIN_DEPARTURES or not seen:
            return max(now_s, due_s)
        best = max(
            seen,
            key=lambda d: (
                bisect.bisect_right(seen, d + HALF_WINDOW_S) - bisect.bisect_left(seen, d - HALF_WINDOW_S)
            ),
        )
        return max(now_s, due_s + best)

    def add_dwell(self, bins: int, seconds: float) -> None:
        n, sx, sy, sxx, sxy = self._dwell
        self._dwell = [n + 1, sx + bins, sy + seconds, sxx + bins * bins, sxy + bins * seconds]

    def learn(self, route: str, step: Step, zero_s: float) -> None:
        """A step a trip of the service day `zero_s` took before a restart, learned again: its
        segment's time and today's traffic, its dwell, the depot's departure."""
        if step.state is Visit.ARRIVED and step.from_s is not None and step.scheduled_s is not None:
            if step.plain_s is not None:
                self.add_day(zero_s, step.plain_s, step.time_s - step.from_s)
            self.add_segment(route, step.index, step.from_s, step.time_s, step.scheduled_s)
            return
        if step.dwell_bins is not None and step.from_s is not None:
            self.add_dwell(step.dwell_bins, step.time_s - step.from_s)
        if step.due_s is not None:
            self.add_departure(step.time_s - step.due_s)

    def dwell(self, bins: int, scheduled: float) -> float:
        n, sx, sy, sxx, sxy = self._dwell
        spread = n * sxx - sx * sx
        if n < 5 or spread <= 0:
            return scheduled
        b = (n * sxy - sx * sy) / spread
        a = (sy - b * sx) / n
        return max(0.0, a + b * bins)


@dataclass(frozen=True)
class Step:
    """A stop reached (ARRIVED) or left (LEFT, SKIPPED), with what the history learned from it:
    an arrival's segment (left the stop before at `from_s`, `scheduled_s` in the timetable,
    `expected_s` by the model then), a departure's dwell (arrived at `from_s`, `dwell_bins`), the
    depot's departure against its time (`due_s`)."""

    index: int
    state: Visit
    time_s: float
    from_s: float | None = None
    scheduled_s: float | None = None
    expected_s: float | None = None  # by the model with today's factor: the trip's pace
    dwell_bins: int | None = None
    plain_s: float | None = None  # an arrival's segment by the model before today's factor
    due_s: float | None = None  # the depot left: when it was due (epoch s), for the departures


@dataclass
class TripState:
    """What the tracker knows of a trip under way, for the prediction."""

    trip: Trip
    zero_s: float  # epoch seconds of the service day's GTFS time 0
    places: list[float]  # each stop's distance along the road
    bins: list[int]  # each stop's usual bins (0 for the depot)
    progress: float = 0.0  # m along the road
    left: dict[int, float] = field(default_factory=dict)  # stop index -> when the truck left it
    arrived: dict[int, float] = field(default_factory=dict)
    passing: set[int] = field(default_factory=set)  # stops driven past: deferred or skipped
    expected_s: float = 0.0  # of the finished segments, by the model
    observed_s: float = 0.0  # of the finished segments, as driven
    steps: list[Step] = field(default_factory=list)  # taken and not yet kept in the service's state

    def restore(self, steps: list[Step]) -> None:
        """The steps this trip took before a restart, in order: where it has been, its pace."""
        # The steps' times are the tracker's own (an arrival at the first still fix); they win
        # over those the notices told gave (an arrival when it was told, at the lift).
        for step in steps:
            if step.state is Visit.ARRIVED:
                self.arrived[step.index] = step.time_s
                if step.expected_s is not None and step.from_s is not None:
                    self.expected_s += step.expected_s
                    self.observed_s += step.time_s - step.from_s
            else:
                if step.from_s is not None:
                    self.arrived[step.index] = step.from_s
                self.arrived.setdefault(step.index, step.time_s)
                self.left[step.index] = step.time_s

    def scheduled_segment(self, k: int) -> float:
        st = self.trip.stop_times
        return float(max(1, st[k].arrival_s - st[k - 1].departure_s))

    def scheduled_dwell(self, k: int) -> float:
        st = self.trip.stop_times[k]
        return float(st.departure_s - st.arrival_s)

    @property
    def pace(self) -> float:
        """Driven over expected on this trip so far, shrunk towards 1."""
        return (self.observed_s + PACE_PRIOR_S) / (self.expected_s + PACE_PRIOR_S)


def observe(history: History, state: TripState, event: StopEvent, bins: int = 0) -> None:
    """A stop's visit changed: the trip's state and the history learn from it."""
    k, t = event.index, event.time_s
    if event.state is Visit.ARRIVED and k not in state.arrived:
        state.arrived[k] = t
        learn_segment(history, state, k, t)
    elif event.state is Visit.LEFT:
        state.left[k] = t
        arrived = state.arrived.get(k)
        learned = arrived is not None and bins != 0 and t - arrived <= MAX_DWELL_S
        if learned and arrived is not None:
            history.add_dwell(bins, t - arrived)
        due = state.zero_s + state.trip.stop_times[0].departure_s if k == 0 else None
        if due is not None:
            history.add_departure(t - due)
        state.steps.append(Step(k, Visit.LEFT, t, arrived, dwell_bins=bins if learned else None, due_s=due))
    elif event.state is Visit.SKIPPED:
        # Passed by (or the depot left before the first fix): reached and left at once.
        state.arrived.setdefault(k, t)
        state.left[k] = t
        state.steps.append(Step(k, Visit.SKIPPED, t, state.arrived[k]))


def learn_segment(history: History, state: TripState, k: int, arrived_s: float) -> None:
    """The truck arrived at stop k: the segment's time feeds the history and the trip's pace."""
    left = state.left.get(k - 1)
    if left is None:
        state.steps.append(Step(k, Visit.ARRIVED, arrived_s))
        return
    scheduled = state.scheduled_segment(k)
    expected = history.segment(state.trip.route_id, k, left, scheduled)
    today = expected * history.day(state.zero_s)
    state.expected_s += today
    state.observed_s += arrived_s - left
    history.add_day(state.zero_s, expected, arrived_s - left)
    history.add_segment(state.trip.route_id, k, left, arrived_s, scheduled)
    state.steps.append(Step(k, Visit.ARRIVED, arrived_s, left, scheduled, today, plain_s=expected))


def predict(history: History, state: TripState, now_s: float) -> dict[int, float]:
    """Predicted arrival (epoch seconds) at every stop not yet reached."""
    st = state.trip.stop_times
    route = state.trip.route_id
    reached = [k for k in range(len(st)) if k in state.arrived]
    last = max(reached) if reached else -1
    pace = state.pace * history.day(state.zero_s)
    if last >= 0 and last not in state.left:
        # At a stop: what is left of its dwell, then on.
        dwell = history.dwell(state.bins[last], state.scheduled_dwell(last))
        t = max(now_s, state.arrived[last] + dwell)
        if last == 0:  # parked at the start: it leaves when trucks still parked by now do
            t = max(t, history.departure(state.zero_s + st[0].departure_s, now_s))
        first = last + 1
    elif last >= 0:
        # Between stops: the rest of this segment, by the share of its road still ahead.
        k = last + 1
        if k >= len(st):
            return {}
        seg = history.segment(route, k, state.left[last], state.scheduled_segment(k)) * pace
        a, b = state.places[last], state.places[k]
        share = 1.0 if b <= a else min(1.0, max(0.0, (b - state.progress) / (b - a)))
        elapsed = now_s - state.left[last]
        remaining = max(seg * share, seg - elapsed, 0.0)
        done = 1.0 - share
        if elapsed > 0 and done > 0:
            # How fast this segment is going so far tells more the more of it is behind.
            remaining = (1 - done) * remaining + done * elapsed * share / done
        t = now_s + remaining
        out = {k: t}
        if k not in state.passing:
            t += history.dwell(state.bins[k], state.scheduled_dwell(k))
        return out | _onwards(history, state, k + 1, t, pace)
    else:
        # Not yet seen at the depot: it leaves when trucks still parked by now do.
        t = history.departure(state.zero_s + st[0].departure_s, now_s)
        first = 1
    return _onwards(history, state, first, t, pace)


def _onwards(history: History, state: TripState, first: int, leave_s: float, pace: float) -> dict[int, float]:
    out: dict[int, float] = {}
    t = leave_s
    for k in range(first, len(state.trip.stop_times)):
        t += history.segment(state.trip.route_id, k, t, state.scheduled_segment(k)) * pace
        out[k] = t
        if k not in state.passing:
            t += history.dwell(state.bins[k], state.scheduled_dwell(k))
    return out
