"""The HTTP clients, from the `hirag-oz-client` distribution (httpx and pydantic only):
`from hirag_oz.client import Client` loads nothing of the server."""

from hirag_oz_client import AsyncClient, Client, error_from_response

__all__ = ["AsyncClient", "Client", "error_from_response"]
