"""Tiny TCP service for the demo: accept on the given ports, send a line, close."""

from __future__ import annotations

import selectors
import socket
import sys


def main(ports: list[int]) -> None:
    sel = selectors.DefaultSelector()
    for port in ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        s.listen(16)
        sel.register(s, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select(timeout=60):
            conn, _ = key.fileobj.accept()  # type: ignore[union-attr]
            conn.sendall(b"hello from the demo service\n")
            conn.close()


if __name__ == "__main__":
    main([int(p) for p in sys.argv[1:]])
