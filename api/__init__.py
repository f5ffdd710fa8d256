"""The skyfleet API: the only component that talks to PostgreSQL."""

__version__ = "0.1.0"
