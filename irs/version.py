"""The version of irs (read by the catalog, which records it; kept apart so nothing imports the package
to learn it)."""

__version__ = "0.1.0"
