"""Network namespaces: run code inside a named netns, and build throw-away test topologies.

`in_netns(name)` switches only the *calling thread* (setns(2) is per thread) and always
switches back, so sockets, netlink handles and ifindex lookups made inside the block
belong to that namespace while the rest of the process is untouched. Named namespaces
are the iproute2 ones (`/run/netns/<name>`), so `ip netns exec` sees the same thing.

Test topology helpers (`VethPair`) create two namespaces joined by a veth pair with IPv4
and IPv6 addresses; every name carries a random suffix so parallel runs never collide.
They shell out to `ip` (iproute2 is a hard dependency of the project anyway).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"
T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)


def netns_path(name: str) -> str:
    if "/" in name or name in ("", ".", ".."):
        raise ValueError(f"invalid netns name {name!r}")
    return os.path.join(NETNS_RUN_DIR, name)


def exists(name: str) -> bool:
    return os.path.exists(netns_path(name))


def _setns(fd: int, what: str) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns({what}): {os.strerror(err)}")


@contextlib.contextmanager
def in_netns(name: str | None) -> Iterator[None]:
    """Run the block with this thread inside netns `name` (None: stay where we are)."""
    if name is None:
        yield
        return
    target = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except BaseException:
        os.close(target)
        raise
    try:
        _setns(target, f"netns {name}")
        try:
            yield
        finally:
            _setns(home, "original netns")
    finally:
        os.close(target)
        os.close(home)


def run_in_netns(name: str | None, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
    with in_netns(name):
        return fn(*args, **kwargs)


def socket_in_netns(name: str | None, family: int, type_: int, proto: int = 0) -> socket.socket:
    """A socket that lives in netns `name` (usable from any thread afterwards)."""
    with in_netns(name):
        return socket.socket(family, type_, proto)


def ifindex(ifname: str, netns: str | None = None) -> int:
    """Interface index inside `netns`; OSError(ENODEV) if there is no such interface."""
    with in_netns(netns):
        try:
            return socket.if_nametoindex(ifname)
        except OSError:
            where = f" in netns {netns}" if netns else ""
            raise OSError(19, f"no interface {ifname!r}{where}") from None


# --------------------------------------------------------------------------- topology


def ip(*args: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `ip [-n netns] ARGS...`; raise OSError with ip's message on failure."""
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise OSError(1, f"{' '.join(cmd)}: {proc.stderr.strip()}")
    return proc


def create_netns(name: str) -> None:
    ip("netns", "add", name)
    ip("link", "set", "lo", "up", netns=name)


def delete_netns(name: str) -> None:
    """Delete a named netns (interfaces in it go with it); missing is fine."""
    if exists(name):
        ip("netns", "del", name, check=False)


def unique_name(prefix: str, length: int = 15) -> str:
    """`prefix` + random hex, within IFNAMSIZ-1 (15) characters."""
    return f"{prefix}{secrets.token_hex(4)}"[:length]


@dataclass
class VethPair:
    """Two namespaces joined by a veth: `a` (where programs attach) <-> `b` (the peer).

    Addresses: IPv4 10.<x>.<y>.1/.2 /24, IPv6 fd00:<x>:<y>::1/::2 /64 (nodad), with a
    random <x>.<y> so concurrent pairs never overlap."""

    ns_a: str = field(default_factory=lambda: unique_name("bpa-", 14))
    ns_b: str = field(default_factory=lambda: unique_name("bpb-", 14))
    if_a: str = field(default_factory=lambda: unique_name("vpa", 12))
    if_b: str = field(default_factory=lambda: unique_name("vpb", 12))
    subnet: tuple[int, int] = field(default_factory=lambda: (secrets.randbelow(200) + 20, secrets.randbelow(250) + 1))
    created: bool = False

    @property
    def ip4_a(self) -> str:
        return f"10.{self.subnet[0]}.{self.subnet[1]}.1"

    @property
    def ip4_b(self) -> str:
        return f"10.{self.subnet[0]}.{self.subnet[1]}.2"

    @property
    def ip6_a(self) -> str:
        return f"fd00:{self.subnet[0]:x}:{self.subnet[1]:x}::1"

    @property
    def ip6_b(self) -> str:
        return f"fd00:{self.subnet[0]:x}:{self.subnet[1]:x}::2"

    def create(self) -> VethPair:
        try:
            create_netns(self.ns_a)
            create_netns(self.ns_b)
            self.created = True
            ip("link", "add", self.if_a, "type", "veth", "peer", "name", self.if_b, "netns", self.ns_b,
               netns=self.ns_a)
            for ns, ifn, v4, v6 in ((self.ns_a, self.if_a, self.ip4_a, self.ip6_a),
                                    (self.ns_b, self.if_b, self.ip4_b, self.ip6_b)):
                ip("addr", "add", f"{v4}/24", "dev", ifn, netns=ns)
                ip("addr", "add", f"{v6}/64", "dev", ifn, "nodad", netns=ns)
                ip("link", "set", ifn, "up", netns=ns)
        except BaseException:
            self.destroy()
            raise
        return self

    def mac(self, side: str) -> str:
        ns, ifn = (self.ns_a, self.if_a) if side == "a" else (self.ns_b, self.if_b)
        import json

        return str(json.loads(ip("-j", "link", "show", ifn, netns=ns).stdout)[0]["address"])

    def destroy(self) -> None:
        delete_netns(self.ns_a)
        delete_netns(self.ns_b)
        self.created = False

    def __enter__(self) -> VethPair:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.destroy()
