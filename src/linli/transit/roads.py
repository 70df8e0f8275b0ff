"""The district's road network, built from the timetable's shapes: road metres between places.

The renovation planner sizes its rounds with it, and the simulated trucks drive it."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import networkx as nx
from shapely import STRtree
from shapely.geometry import Point

from linli.transit.gtfs import Feed

DETOUR = 1.4  # straight line to road distance, where no road joins two places
JOIN_M = 30.0  # road ends this close are one junction


class Roads:
    """The district's road network, from every shape of the timetable."""

    def __init__(self, feed: Feed, join_m: float = JOIN_M) -> None:
        self.graph: nx.Graph = nx.Graph()
        points: list[tuple[float, float]] = []
        index: dict[tuple[int, int], int] = {}

        def node(x: float, y: float) -> int:
            key = (round(x), round(y))
            if key not in index:
                index[key] = len(points)
                points.append((x, y))
                self.graph.add_node(index[key])
            return index[key]

        for shape in feed.shapes.values():
            coords = list(shape.line.coords)
            for (x0, y0), (x1, y1) in itertools.pairwise(coords):
                a, b = node(x0, y0), node(x1, y1)
                if a != b:
                    self.graph.add_edge(a, b, m=math.dist((x0, y0), (x1, y1)))
        self.points = points
        self.tree = STRtree([Point(p) for p in points])
        for i, p in enumerate(points):
            for j in self.tree.query(Point(p).buffer(join_m)):
                if int(j) != i and not self.graph.has_edge(i, int(j)):
                    self.graph.add_edge(i, int(j), m=math.dist(p, points[int(j)]))
        self.fallbacks = 0

    def nearest(self, xy: tuple[float, float]) -> int:
        return int(self.tree.nearest(Point(xy)))

    def matrix(self, places: Sequence[tuple[float, float]]) -> list[list[float]]:
        """Road metres between every two places, the way on and off the road included."""
        nodes = [self.nearest(p) for p in places]
        off = [math.dist(p, self.points[n]) for p, n in zip(places, nodes, strict=True)]
        out = []
        for i, a in enumerate(nodes):
            reach = nx.single_source_dijkstra_path_length(self.graph, a, weight="m")
            row = []
            for j, b in enumerate(nodes):
                if i == j:
                    row.append(0.0)
                elif b in reach:
                    row.append(off[i] + reach[b] + off[j])
                else:
                    self.fallbacks += 1
                    row.append(math.dist(places[i], places[j]) * DETOUR)
            out.append(row)
        return out
