"""evflex: an OCPP 1.6J + 2.0.1 central system that turns a charging fleet into a grid resource."""

__version__ = "0.1.0"
