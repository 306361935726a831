"""The package version, in a module of its own so that any module can read it without importing
the package root (which would make every module depend on everything ``__init__`` imports)."""

__version__ = "0.1.0"
