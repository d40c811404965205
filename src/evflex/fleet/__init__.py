"""Live, version-neutral state of the fleet: stations, EVSEs, transactions and aggregates.

This package imports nothing else of evflex: the gateway, the store, the API and the
grid services all speak its language.
"""
