"""User-facing errors. The CLI prints their message on one line and exits with code 2."""


class SamkitError(Exception):
    """Base class for errors caused by bad input (files, prompts, checkpoints)."""


class ImageError(SamkitError):
    """An image could not be read or is not acceptable (corrupt, too large, ...)."""


class PromptError(SamkitError):
    """A prompt (points, labels, box, mask input, text) is malformed."""


class CheckpointError(SamkitError):
    """A checkpoint is missing, corrupt, or belongs to another architecture."""


class DownloadError(CheckpointError):
    """A checkpoint could not be downloaded (offline, bad URL, checksum mismatch)."""
