"""Traffic probes run as a child process: `python npprobe.py [--cgroup DIR] [--netns NS] JSON`.

The child first moves itself into the cgroup (so a cgroup_skb endpoint's programs see
its traffic), then runs each probe and prints a JSON list of booleans:
  ["tcp", host, port]   connect() succeeds within 1 s
  ["udp", host, port]   a datagram gets an echo back within 1 s
  ["ping", host]        one ICMP echo (raw socket) is answered within 1 s
then enters network namespace NS (setns), so the cgroup is joined while /sys is the host's.
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import struct
import sys
import time


def tcp(host: str, port: int) -> bool:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect((host, port))
            return True
        except OSError:
            return False


def udp(host: str, port: int) -> bool:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.settimeout(1.0)
        try:
            s.sendto(b"probe", (host, port))
            return s.recv(64) == b"probe"
        except OSError:
            return False


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ping(host: str) -> bool:
    """One ICMP/ICMPv6 echo over a raw socket (root); True when the reply comes back."""
    v6 = ":" in host
    fam, proto, req, rep = ((socket.AF_INET6, socket.IPPROTO_ICMPV6, 128, 129) if v6
                            else (socket.AF_INET, socket.IPPROTO_ICMP, 8, 0))
    ident = os.getpid() & 0xFFFF
    body = struct.pack("!BBHHH", req, 0, 0, ident, 1) + b"bpfpolicy"
    if not v6:  # the kernel fills the ICMPv6 checksum
        body = body[:2] + struct.pack("!H", _csum(body)) + body[4:]
    with socket.socket(fam, socket.SOCK_RAW, proto) as s:
        s.settimeout(1.0)
        s.sendto(body, (host, 0))
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                data, addr = s.recvfrom(2048)
            except OSError:
                return False
            icmp = data if v6 else data[(data[0] & 0x0F) * 4:]
            if addr[0] == host and icmp[0] == rep and struct.unpack("!H", icmp[4:6])[0] == ident:
                return True
    return False


def enter_netns(name: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
        raise OSError(ctypes.get_errno(), f"setns {name}")
    os.close(fd)


def main() -> None:
    args = sys.argv[1:]
    if args[0] == "--cgroup":  # first: `ip netns exec` would hide /sys/fs/cgroup
        with open(os.path.join(args[1], "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
        args = args[2:]
    if args[0] == "--netns":
        enter_netns(args[1])
        args = args[2:]
    out = []
    for p in json.loads(args[0]):
        out.append({"tcp": tcp, "udp": udp, "ping": ping}[p[0]](*p[1:]))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
