"""Try one flow from a given source address and print what happened (demo helper)."""

from __future__ import annotations

import socket
import subprocess
import sys

TARGET = "10.77.0.1"


def tcp(src: str, port: int) -> str:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(1.0)
    s.bind((src, 0))
    try:
        s.connect((TARGET, port))
        return "connected: " + s.recv(64).decode().strip()
    except TimeoutError:
        return "no answer (dropped)"
    except OSError as e:
        return f"failed ({e.strerror})"
    finally:
        s.close()


def icmp(src: str) -> str:
    ok = subprocess.run(["ping", "-c", "1", "-W", "1", "-I", src, TARGET], capture_output=True).returncode == 0
    return "echo reply" if ok else "no reply (dropped)"


def main(src: str, proto: str, port: str) -> None:
    result = icmp(src) if proto == "icmp" else tcp(src, int(port))
    what = f"ping {TARGET}" if proto == "icmp" else f"tcp {TARGET}:{port}"
    print(f"  from {src:<11} {what:<20} -> {result}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
