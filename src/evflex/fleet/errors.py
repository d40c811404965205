"""Domain errors shared by the layers that manage stations."""


class DuplicateStation(Exception):
    """A station with this id is already registered."""
