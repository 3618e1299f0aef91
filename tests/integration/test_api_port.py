"""The API refuses a port another server listens on.

Granian listens with SO_REUSEPORT: without this check a second stack on a taken port
started silently and the kernel dealt connections between the two (a load test saw the
other stack's 401 INVALID_TOKEN in bursts)."""

from __future__ import annotations

import socket

import pytest

from spot.api_server import check_port_free


def test_a_port_with_a_reuseport_listener_is_refused_and_free_once_it_closes() -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        with pytest.raises(OSError, match="taken by another server"):
            check_port_free("127.0.0.1", port)
    finally:
        listener.close()
    check_port_free("127.0.0.1", port)
