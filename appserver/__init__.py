"""appserver: a pre-fork HTTP server for Python apps, and the deployment bundle around it."""

from ._build import BUILD, BUILD_REASON

__all__ = ["BUILD", "BUILD_REASON"]
