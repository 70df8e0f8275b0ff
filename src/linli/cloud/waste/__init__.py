"""Waste collection run like a bus line: timetables, tracking, notices, statistics."""
