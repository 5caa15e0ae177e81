"""`idv serve-flows` checks its port before it starts Prefect's server: a port another
process listens on is in use; one the last server left in TIME_WAIT (stopped a moment ago,
its connections closed from its side) is free, as the server binds with SO_REUSEADDR."""

from __future__ import annotations

import socket

from idv.commands.schedules import _port_free


def test_when_the_last_server_left_time_wait_then_the_port_is_free_and_a_listener_is_not():
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    assert not _port_free(port)  # listening
    accepted.close()  # the server's side closes first: its end waits in TIME_WAIT
    client.recv(1)
    client.close()
    server.close()
    with socket.socket() as plain:  # what the check used to do: refused in TIME_WAIT
        try:
            plain.bind(("127.0.0.1", port))
            in_time_wait = False
        except OSError:
            in_time_wait = True
    assert in_time_wait, "the port did not enter TIME_WAIT; the test proves nothing"
    assert _port_free(port)
