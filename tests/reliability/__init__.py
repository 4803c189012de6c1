"""Reliability suite: real node processes under crash, disk and network faults, byzantine
nodes, hostile input and sustained load (docs/reliability.md)."""
