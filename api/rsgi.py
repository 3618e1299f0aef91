"""Granian's RSGI types under the names granian.rsgi gives them.

granian.rsgi imports them from its extension module under new names, which mypy --strict
does not take as re-exports; they are taken here from where they are defined (typed by
granian's own stub), once for every module of the API.
"""

from granian import _granian
from granian.rsgi import Scope, WebsocketMessageType

HTTPProtocol = _granian.RSGIHTTPProtocol
WebsocketProtocol = _granian.RSGIWebsocketProtocol
ProtocolClosed = _granian.RSGIProtocolClosed
ProtocolError = _granian.RSGIProtocolError

__all__ = [
    "HTTPProtocol",
    "ProtocolClosed",
    "ProtocolError",
    "Scope",
    "WebsocketMessageType",
    "WebsocketProtocol",
]
