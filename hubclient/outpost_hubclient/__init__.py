"""JupyterHub spawner that starts servers through an Outpost portal (never imports Django)."""

from .errors import InvalidOptions, OutpostError, OutpostUnreachable, StartCancelled, StartRefused
from .spawner import OutpostPortalSpawner

__version__ = "0.1.0"

__all__ = [
    "InvalidOptions",
    "OutpostError",
    "OutpostPortalSpawner",
    "OutpostUnreachable",
    "StartCancelled",
    "StartRefused",
    "__version__",
]
