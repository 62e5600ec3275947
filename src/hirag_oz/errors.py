"""The errors the library raises: the classes of `hirag_oz_client.errors`, by cause.

The client distribution owns them so that an application catching `NotFoundError` catches
it from the library in-process and from a client alike; `WIRE` there maps each to its HTTP
status and code, in one table.
"""

from hirag_oz_client.errors import *  # noqa: F403
from hirag_oz_client.errors import __all__ as __all__
