"""Typed errors shared by every package. The CLI maps any `SGProjectError` to exit code 2 with its message."""


class SGProjectError(Exception):
    """Base class: a problem the user can act on. `str(err)` is a one-line message meant for them."""


class ModelNotFoundError(SGProjectError):
    """A model spec names neither a registered model nor an existing file."""


class CheckpointError(SGProjectError):
    """A checkpoint is truncated, foreign, of an unknown format version, or does not match its config."""


class UnsafePickleError(CheckpointError):
    """A pickle asks for a global outside the allow-list; nothing from it was executed."""


class UnsupportedNetworkError(CheckpointError):
    """A file holds a network this project cannot represent (StyleGAN1, StyleGAN3 alias-free, ...)."""
