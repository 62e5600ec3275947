"""HTTP API."""

from hirag_oz.api.app import create_app

__all__ = ["create_app"]
