"""delegation-service: mints narrower child JWTs and tracks and revokes them."""

from importlib import metadata


def version() -> str:
    """The installed distribution's version (``unknown`` in a source tree never installed)."""
    try:
        return metadata.version("delegation-service")
    except metadata.PackageNotFoundError:
        return "unknown"
