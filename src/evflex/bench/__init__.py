"""Benchmarks: `evflex serve` in one process, a wire-only load generator in another.

The load generator (`evflex.bench.loadgen`) speaks OCPP-J over picows and never
imports the server's packages, so it measures what a real fleet would see.
Scenarios live in `evflex.bench.scenarios` and are registered by name; the
command line is `evflex bench SCENARIO`.
"""
