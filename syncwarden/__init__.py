"""Composition root: loads settings, wires every room together and starts the process."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("syncwarden")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
