"""The package version, in a module of its own so that every layer can import it without the package face
(``wave_deploy/__init__.py``, the Python API, imports it from here too)."""

__version__ = "0.1.0"
