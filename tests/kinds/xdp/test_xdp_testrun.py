"""XDPBlocklist programs on the real kernel via BPF_PROG_TEST_RUN: crafted packets
(VLAN, IPv4 options, IPv6 extension headers, fragments, truncation), exact counters,
map deltas without reload, and a differential check against the Python reference."""

from __future__ import annotations

import socket
import struct
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bpfpolicy.kinds.xdp import packets as pk
from bpfpolicy.kinds.xdp.lower import classify
from bpfpolicy.policy.compile import compile_paths

from helpers.kernel_fixtures import require_kernel
from helpers.xdp import Loaded, load

pytestmark = pytest.mark.kernel
DROP, PASS = 1, 2

POLICY = """\
apiVersion: bpfpolicy.io/v1
kind: XDPBlocklist
metadata: {name: t}
spec:
  interfaces: [eth0]
  deny:
    - name: nets
      sources: [10.0.0.0/8, 192.0.2.0/24, 198.51.100.7, 2001:db8:bad::/48, 2001:db8::7]
      sourceFiles: [list.txt]
    - name: ssh
      sources: [172.16.0.0/12, 2001:db8:5::/64]
      protocols: [tcp]
      ports: [22, "2200-2299"]
    - name: udp-only
      sources: [100.64.0.0/10]
      protocols: [udp]
  allow:
    - name: ok
      sources: [10.1.2.3, 192.0.2.128/25, 2001:db8:bad:1::/64]
"""


def compile_policy(tmp_path: Path, text: str = POLICY, listing: str = "203.0.113.0/24\n203.0.114.5\n") -> object:
    (tmp_path / "list.txt").write_text(listing)
    p = tmp_path / "p.yaml"
    p.write_text(textwrap.dedent(text))
    res = compile_paths([p])
    assert res.ok, [str(d) for d in res.diagnostics]
    return res.artifacts[0][1]


@pytest.fixture
def prog(tmp_path: Path) -> Iterator[Loaded]:
    require_kernel()
    L = load(compile_policy(tmp_path))
    try:
        yield L
    finally:
        L.close()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    """One loaded program for the read-only verdict tests (loading costs ~0.5 s)."""
    require_kernel()
    L = load(compile_policy(tmp_path_factory.mktemp("xdp")))
    try:
        yield L
    finally:
        L.close()


def run(L: Loaded, data: bytes) -> int:
    return L.run(data).retval


@pytest.mark.parametrize("src,proto,dport,want", [
    ("10.9.9.9", 17, 53, DROP),          # inside a /8
    ("10.1.2.3", 17, 53, PASS),          # allow /32 inside the denied /8
    ("192.0.2.5", 6, 80, DROP),          # /24
    ("192.0.2.200", 6, 80, PASS),        # allow /25 inside it
    ("198.51.100.7", 1, 0, DROP),        # exact /32, ICMP
    ("198.51.100.8", 6, 80, PASS),       # its neighbour
    ("203.0.113.77", 6, 443, DROP),      # from the list file
    ("203.0.114.5", 6, 443, DROP),
    ("203.0.114.6", 6, 443, PASS),
    ("172.16.5.5", 6, 22, DROP),         # port rule
    ("172.16.5.5", 6, 2250, DROP),       # port range
    ("172.16.5.5", 6, 2300, PASS),       # outside the range
    ("172.16.5.5", 17, 22, PASS),        # wrong protocol
    ("100.64.1.1", 17, 9, DROP),         # protocol-only rule
    ("100.64.1.1", 6, 9, PASS),
    ("2001:db8:bad::1", 6, 80, DROP),    # IPv6 prefix
    ("2001:db8:bad:1::9", 6, 80, PASS),  # IPv6 allow inside it
    ("2001:db8::7", 17, 53, DROP),       # IPv6 /128
    ("2001:db8::8", 17, 53, PASS),
    ("2001:db8:5::1", 6, 22, DROP),
    ("2001:db8:5::1", 6, 23, PASS),
    ("198.18.0.1", 6, 22, PASS),         # listed nowhere
])
def test_verdicts(shared: Loaded, src: str, proto: int, dport: int, want: int) -> None:
    assert run(shared, pk.packet(src, proto, dport)) == want
    assert run(shared, pk.packet(src, proto, dport, vlans=(10,))) == want, "802.1Q"
    assert run(shared, pk.packet(src, proto, dport, vlans=(10, 20))) == want, "QinQ"


def test_non_ip_passes(shared: Loaded) -> None:
    assert run(shared, pk.arp("10.9.9.9")) == PASS
    assert run(shared, pk.eth(0x88CC) + bytes(50)) == PASS  # LLDP
    assert run(shared, pk.eth(pk.ETH_P_ARP, vlans=(7,)) + pk.arp()[14:]) == PASS


def test_ipv4_options_are_skipped(shared: Loaded) -> None:
    opts = bytes([7, 11, 4]) + bytes(8)  # record route, 11 bytes (padded to 12)
    frame = pk.eth(pk.ETH_P_IP) + pk.ipv4("172.16.5.5", proto=6, payload=pk.l4(6, dport=22), options=opts)
    assert frame[14] & 0x0F == 8
    assert run(shared, frame) == DROP
    frame = pk.eth(pk.ETH_P_IP) + pk.ipv4("172.16.5.5", proto=6, payload=pk.l4(6, dport=23), options=opts)
    assert run(shared, frame) == PASS


def test_ipv4_non_first_fragment_has_no_ports(shared: Loaded) -> None:
    frag = pk.eth(pk.ETH_P_IP) + pk.ipv4("172.16.5.5", proto=6, payload=pk.l4(6, dport=22), frag_offset=100)
    assert run(shared, frag) == PASS  # port rule cannot match without an L4 header
    frag = pk.eth(pk.ETH_P_IP) + pk.ipv4("10.9.9.9", proto=6, payload=bytes(8), frag_offset=100)
    assert run(shared, frag) == DROP  # address-only rule still does


def v6_with_ext(src: str, exts: list[int], dport: int = 22, frag_offset: int = 0) -> bytes:
    chain = b""
    kinds = [*exts, 6]
    for kind, nxt in zip(kinds, kinds[1:], strict=False):
        chain += pk.v6_ext(kind, nxt, frag_offset if kind == 44 else 0)
    return pk.eth(pk.ETH_P_IPV6) + pk.ipv6(src, nexthdr=kinds[0], payload=chain + pk.l4(6, dport=dport))


@pytest.mark.parametrize("exts", [[0], [43], [60], [44], [0, 43, 60], [0, 60, 44, 60]])
def test_ipv6_extension_headers_are_walked(shared: Loaded, exts: list[int]) -> None:
    assert run(shared, v6_with_ext("2001:db8:5::1", exts, 22)) == DROP
    assert run(shared, v6_with_ext("2001:db8:5::1", exts, 23)) == PASS


def test_ipv6_non_first_fragment(shared: Loaded) -> None:
    assert run(shared, v6_with_ext("2001:db8:5::1", [44], 22, frag_offset=10)) == PASS
    assert run(shared, v6_with_ext("2001:db8:bad::1", [44], 22, frag_offset=10)) == DROP


def test_truncated_packets_pass_safely(shared: Loaded) -> None:
    frames = [pk.packet("10.9.9.9", 6, 22), pk.packet("172.16.5.5", 6, 22, vlans=(1, 2)),
              pk.packet("2001:db8:5::1", 6, 22), v6_with_ext("2001:db8:5::1", [0, 43])]
    for frame in frames:
        for cut in range(14, len(frame)):  # the kernel refuses XDP test runs under ETH_HLEN
            got = run(shared, frame[:cut])
            assert got in (PASS, DROP)
            if cut < 14 + 20:  # no complete IP header: never classified
                assert got == PASS, (frame.hex(), cut)
    # IPv4 with a bogus IHL < 5 passes
    bad = bytearray(pk.packet("10.9.9.9"))
    bad[14] = 0x44
    assert run(shared, bytes(bad)) == PASS


def test_counters_are_exact(prog: Loaded) -> None:
    frame = pk.packet("192.0.2.5", 17, 53, size=100)
    allowed = pk.packet("10.1.2.3", 17, 53, size=90)
    for _ in range(7):
        assert run(prog, frame) == DROP
    assert prog.run(allowed, repeat=5).retval == PASS  # repeat counts every run
    assert run(prog, pk.packet("198.18.0.1")) == PASS  # unlisted: no counter
    c = prog.counters()
    assert c["nets"] == (7, 700)
    assert c["ok"] == (5, 450)
    assert c["ssh"] == (0, 0) and c["udp-only"] == (0, 0)


def test_map_delta_changes_verdicts_without_reload(prog: Loaded, tmp_path: Path) -> None:
    before = prog.obj.program("xdp_blocklist").fd
    assert run(prog, pk.packet("203.0.114.9")) == PASS
    new = compile_policy(tmp_path, listing="203.0.113.0/24\n203.0.114.9\n")
    changes = prog.update(new)
    touched = {k: v for k, v in changes.items() if v != (0, 0)}
    # 203.0.114.5 -> .9: same /24, same bucket or not: one record rewritten or one moved
    assert sum(w for w, _ in touched.values()) <= 2 and set(touched) <= {"v4_buckets"}, touched
    assert run(prog, pk.packet("203.0.114.9")) == DROP
    assert run(prog, pk.packet("203.0.114.5")) == PASS
    assert prog.obj.program("xdp_blocklist").fd == before


def test_kernel_test_vectors_hold(tmp_path: Path) -> None:
    require_kernel()
    art = compile_policy(tmp_path)
    L = load(art)
    try:
        lines = art.files["kernel-test.txt"].decode().splitlines()
        assert lines[1] == "object prog.bpf.o"
        runs = [ln.split() for ln in lines if ln.startswith("prog-run")]
        assert len(runs) >= 5
        for _, prog_name, want, hexdata in runs:
            assert prog_name == "xdp_blocklist"
            assert run(L, bytes.fromhex(hexdata)) == int(want)
    finally:
        L.close()


def test_differential_against_reference(tmp_path: Path) -> None:
    """Random sources (many inside listed ranges) classified by the kernel and by the
    Python reference must agree."""
    require_kernel()
    rng = np.random.default_rng(11)
    listing = []
    for _ in range(400):
        plen = int(rng.choice([32, 32, 24, 20, 27, 30]))
        a = int(rng.integers(0, 2**32)) & ((0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF)
        listing.append(f"{socket.inet_ntoa(a.to_bytes(4, 'big'))}/{plen}")
    art = compile_policy(tmp_path, listing="\n".join(listing) + "\n")
    L = load(art)
    low = _lowered(tmp_path)
    try:
        picks = []
        for entry in listing[:200]:
            net, plen = entry.split("/")
            base = int.from_bytes(socket.inet_aton(net), "big")
            off = int(rng.integers(0, 1 << (32 - int(plen)))) if int(plen) < 32 else 0
            picks.append(socket.inet_ntoa((base + off).to_bytes(4, "big")))
        picks += [socket.inet_ntoa(int(x).to_bytes(4, "big")) for x in rng.integers(0, 2**32, 200)]
        for src in picks:
            for proto, dport in ((6, 22), (17, 53), (6, 2250)):
                want, _ = classify(low, src, proto, dport)
                got = run(L, pk.packet(src, proto, dport))
                assert got == (DROP if want == "drop" else PASS), (src, proto, dport)
    finally:
        L.close()


def _lowered(tmp_path: Path) -> object:
    from bpfpolicy.kinds.xdp.kind import XDPBlocklistKind
    from bpfpolicy.kinds.xdp.lower import lower
    from bpfpolicy.policy.load import load_file

    doc = load_file(tmp_path / "p.yaml")[0]
    return lower(XDPBlocklistKind().rules(doc), None)


def test_syn_rate_limit_per_source(tmp_path: Path) -> None:
    require_kernel()
    text = POLICY.replace("  allow:", "  rateLimit: {synPerSecond: 1, burst: 3}\n  allow:")
    L = load(compile_policy(tmp_path, text))
    try:
        syn_a = pk.packet("198.18.1.1", 6, 80, flags=pk.TCP_SYN)
        syn_b = pk.packet("198.18.2.2", 6, 80, flags=pk.TCP_SYN)
        results_a = [run(L, syn_a) for _ in range(20)]
        assert results_a[:3] == [PASS] * 3 and results_a[3:].count(DROP) >= 16
        assert [run(L, syn_b) for _ in range(3)] == [PASS] * 3  # another source: own bucket
        assert run(L, pk.packet("198.18.1.1", 6, 80, flags=pk.TCP_ACK)) == PASS  # not a SYN
        assert run(L, pk.packet("10.1.2.3", 6, 80, flags=pk.TCP_SYN)) == PASS  # allow wins
        dropped = L.counters()["rateLimit"][0]
        assert dropped == results_a.count(DROP)
    finally:
        L.close()


def test_verifier_rejection_is_reported(tmp_path: Path) -> None:
    """A broken object surfaces the verifier's words (libbpf log captured)."""
    require_kernel()
    from bpfpolicy.codegen.build import build_bpf
    from bpfpolicy.kernel.libbpf import BpfLoadError, BpfObject

    src = ('#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n'
           'SEC("xdp") int bad(struct xdp_md *ctx) { return *(int *)(long)ctx->data; }\n'
           'char LICENSE[] SEC("license") = "GPL";\n')
    obj = BpfObject.open_mem(build_bpf(src, name="bad").object, "bad")
    with pytest.raises(BpfLoadError) as e:
        obj.load()
    obj.close()
    assert "outside of the packet" in str(e.value) or "invalid access to packet" in str(e.value)


def test_struct_sanity() -> None:
    assert len(pk.l4(6)) == 20 and struct.unpack("!H", pk.l4(6, dport=99)[2:4])[0] == 99


def _rules_yaml(n: int) -> str:
    return "".join(f"    - name: r{i}\n      sources: [10.{i}.0.0/16, 172.16.{i}.1]\n"
                   + ("      protocols: [udp]\n" if i % 3 == 0 else "") for i in range(n))


SHAPES = {
    "v6-only": "  deny:\n    - sources: ['2001:db8::/32', '2001:db8:1::1']\n",
    "small-exact-v4": "  deny:\n    - sources: [198.51.100.7, 198.51.100.9]\n      ports: [53]\n",
    "many-rules": "  deny:\n" + _rules_yaml(20) + "  allow:\n    - sources: [10.3.3.3]\n",
    "rate-limit-only": "  rateLimit: {synPerSecond: 5}\n  allow:\n    - sources: [10.0.0.0/8]\n",
    "default-route": "  deny:\n    - sources: [0.0.0.0/0, '::/0']\n  allow:\n    - sources: [10.1.1.1]\n",
}
PROBES = ["2001:db8::5", "2001:db8:1::1", "2001:db9::1", "198.51.100.7", "198.51.100.8", "10.3.3.3",
          "10.3.9.9", "10.19.0.1", "172.16.4.1", "172.16.4.2", "10.1.1.1", "8.8.8.8"]


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_policy_shapes_match_reference(tmp_path: Path, shape: str) -> None:
    """Feature combinations (IPv6 only, small exact-only IPv4 hash layout, > 16 rules,
    no deny rules, /0 prefixes) load and agree with the reference classifier."""
    require_kernel()
    text = "apiVersion: bpfpolicy.io/v1\nkind: XDPBlocklist\nmetadata: {name: s}\nspec:\n  interfaces: [eth0]\n" + SHAPES[shape]
    p = tmp_path / "p.yaml"
    p.write_text(text)
    res = compile_paths([p])
    assert res.ok, [str(d) for d in res.diagnostics]
    art = res.artifacts[0][1]
    if shape == "small-exact-v4":
        assert art.manifest["features"]["v4"] == "hash"
    L = load(art)
    try:
        low = _lowered(tmp_path)
        for src in PROBES:
            for proto, dport in ((6, 53), (17, 53), (17, 80)):
                want, _ = classify(low, src, proto, dport)
                assert run(L, pk.packet(src, proto, dport)) == (DROP if want == "drop" else PASS), (src, proto, dport)
    finally:
        L.close()
