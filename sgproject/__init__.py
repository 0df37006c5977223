"""The `sgproject` command line. It parses arguments, calls the library and renders with rich; nothing else."""

__version__ = "0.1.0"
