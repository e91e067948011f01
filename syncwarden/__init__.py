"""Syncwarden, in one package so that nothing it installs can collide with another distribution.

Its subpackages are the rooms (``bot``, ``workflows``, ``sync``, ``connectors``, ``core``,
``sandbox``, ``manifest``, ``migrations``); its own modules are the composition root, which loads
the settings, wires the rooms together and starts the process.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("syncwarden")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
