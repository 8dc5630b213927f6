"""One module per vendor wire format; each exposes `FORMAT` (routes and error answers).

Formats are pure functions from a `SimRequest` and a `Feed` to a `Reply`, so they can be
tested without sockets; `..server` owns the network, faults and counters.
"""
