"""XDPBlocklist validation and lowering without a kernel: precise diagnostics for bad
input (file:line:col), list parsing, and the lowering's layout decisions."""

from __future__ import annotations

import socket
import textwrap
from pathlib import Path

import numpy as np
import pytest

from bpfpolicy.kinds.xdp.sources import parse_cidr, parse_list
from bpfpolicy.policy.compile import compile_paths
from bpfpolicy.policy.validate import validate_paths

HEADER = """\
apiVersion: bpfpolicy.io/v1
kind: XDPBlocklist
metadata: {name: edge}
spec:
  interfaces: [eth0]
"""


def write(tmp_path: Path, body: str, name: str = "policy.yaml") -> Path:
    p = tmp_path / name
    p.write_text(HEADER + textwrap.indent(textwrap.dedent(body), "  "))
    return p


def errors(path: Path) -> list[str]:
    res = validate_paths([path])
    return [str(d) for d in res.errors]


def only_error(path: Path) -> str:
    errs = errors(path)
    assert len(errs) == 1, errs
    return errs[0]


def test_host_bits_set_names_the_network(tmp_path: Path) -> None:
    p = write(tmp_path, """\
      deny:
        - name: bogons
          sources: [10.0.0.0/8, 192.0.2.1/24]
    """)
    assert only_error(p) == (f'{p}:8:29: spec.deny[0].sources[1]: "192.0.2.1/24" has host bits set: '
                             "the network is 192.0.2.0/24")


def test_ipv6_host_bits_and_bad_address(tmp_path: Path) -> None:
    p = write(tmp_path, """\
      deny:
        - sources:
            - 2001:db8::1/32
            - 300.1.2.3
    """)
    errs = errors(p)
    assert errs == [
        f'{p}:8:11: spec.deny[0].sources[0]: "2001:db8::1/32" has host bits set: the network is 2001:db8::/32',
        f'{p}:9:11: spec.deny[0].sources[1]: "300.1.2.3" is not a valid IPv4 address or CIDR',
    ]


def test_prefix_length_out_of_range(tmp_path: Path) -> None:
    p = write(tmp_path, """\
      deny:
        - sources: [10.0.0.0/33]
    """)
    assert only_error(p) == f'{p}:7:17: spec.deny[0].sources[0]: "10.0.0.0/33": prefix length 33 is out of range (0-32)'


def test_reversed_and_out_of_range_ports(tmp_path: Path) -> None:
    p = write(tmp_path, """\
      deny:
        - sources: [10.0.0.0/8]
          protocols: [tcp]
          ports: [22, "9000-8000", "70000"]
    """)
    assert errors(p) == [
        f'{p}:9:19: spec.deny[0].ports[1]: port range "9000-8000" is reversed (did you mean "8000-9000"?)',
        f"{p}:9:32: spec.deny[0].ports[2]: port 70000 is out of range (0-65535)",
    ]


def test_ports_need_a_protocol_with_ports(tmp_path: Path) -> None:
    p = write(tmp_path, """\
      deny:
        - sources: [10.0.0.0/8]
          protocols: [icmp]
          ports: [22]
    """)
    assert only_error(p) == (f"{p}:9:7: spec.deny[0].ports: ports only apply to tcp, udp and sctp, "
                             "but the rule's protocols are icmp")


def test_any_cannot_be_combined(tmp_path: Path) -> None:
    p = write(tmp_path, """\
      deny:
        - sources: [10.0.0.0/8]
          protocols: [tcp, any]
    """)
    assert only_error(p) == f'{p}:8:7: spec.deny[0].protocols: "any" cannot be combined with other protocols'


def test_duplicate_rule_names(tmp_path: Path) -> None:
    p = write(tmp_path, """\
      deny:
        - name: lab
          sources: [10.0.0.0/8]
      allow:
        - name: lab
          sources: [10.1.0.0/16]
    """)
    assert only_error(p) == (f'{p}:10:7: spec.allow[0].name: duplicate rule name "lab" (first used at '
                             "line 7); counters are reported by rule name")


def test_bad_interface_names(tmp_path: Path) -> None:
    p = tmp_path / "ifaces.yaml"
    p.write_text(textwrap.dedent("""\
        apiVersion: bpfpolicy.io/v1
        kind: XDPBlocklist
        metadata: {name: edge}
        spec:
          interfaces:
            - eth/0
            - {name: veth0, netns: a/b}
            - eth1
            - eth1
          deny:
            - sources: [10.0.0.0/8]
        """))
    assert errors(p) == [
        f'{p}:6:7: spec.interfaces[0]: "eth/0" is not a valid interface name (no whitespace, "/" or ":")',
        f'{p}:7:21: spec.interfaces[1].netns: "a/b" is not a valid network namespace name (a name under /run/netns)',
        f'{p}:9:7: spec.interfaces[3]: interface "eth1" is listed twice (also spec.interfaces[2])',
    ]


def test_interface_name_too_long_is_a_schema_error(tmp_path: Path) -> None:
    p = tmp_path / "long.yaml"
    p.write_text(HEADER.replace("[eth0]", "[averyveryverylongname0]") + "  deny:\n    - sources: [10.0.0.0/8]\n")
    err = only_error(p)
    assert err.startswith(f"{p}:5:16: spec.interfaces[0]:"), err


def test_missing_source_file(tmp_path: Path) -> None:
    p = write(tmp_path, """\
      deny:
        - sourceFiles: [lists/nope.txt]
    """)
    assert only_error(p) == (f"{p}:7:21: spec.deny[0].sourceFiles[0]: source list {tmp_path}/lists/nope.txt "
                             "does not exist (paths are relative to the policy file)")


def test_malformed_list_lines_point_into_the_list(tmp_path: Path) -> None:
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "bad.txt").write_text("# comment\n10.0.0.1\n1.2.3\n\n192.0.2.1/24  # x\n2001:db8::zz\n")
    p = write(tmp_path, """\
      deny:
        - sourceFiles: [lists/bad.txt]
    """)
    lf = tmp_path / "lists" / "bad.txt"
    assert errors(p) == [
        f'{lf}:3:1: spec.deny[0].sourceFiles[0]: "1.2.3" is not a valid IPv4 address or CIDR',
        f'{lf}:5:1: spec.deny[0].sourceFiles[0]: "192.0.2.1/24" has host bits set: the network is 192.0.2.0/24',
        f'{lf}:6:1: spec.deny[0].sourceFiles[0]: "2001:db8::zz" is not a valid IPv6 address or CIDR',
    ]


def test_allow_only_policy_has_nothing_to_enforce(tmp_path: Path) -> None:
    p = write(tmp_path, """\
      allow:
        - sources: [10.0.0.0/8]
    """)
    assert only_error(p) == (f"{p}:4:1: spec: nothing to enforce: give deny rules or a rateLimit "
                             "(allow rules only make exceptions to those)")


def test_unknown_field_is_reported_with_suggestion(tmp_path: Path) -> None:
    p = write(tmp_path, """\
      deny:
        - sources: [10.0.0.0/8]
          protocol: [tcp]
    """)
    err = only_error(p)
    assert err.startswith(f"{p}:8:7: spec.deny[0].protocol:") and "protocols" in err, err


def test_bad_policy_compiles_nothing(tmp_path: Path) -> None:
    p = write(tmp_path, """\
      deny:
        - sources: [192.0.2.1/24]
    """)
    res = compile_paths([p])
    assert not res.ok and not res.artifacts


def test_example_policy_is_valid() -> None:
    root = Path(__file__).resolve().parents[3]
    res = validate_paths([root / "policies" / "xdp"])
    assert res.ok, [str(d) for d in res.diagnostics]


# --------------------------------------------------------------------------- lists


def test_parse_cidr_forms() -> None:
    assert parse_cidr("192.0.2.0/24") == (4, 0xC0000200, 24)
    assert parse_cidr(" 10.1.2.3 ") == (4, 0x0A010203, 32)
    assert parse_cidr("2001:db8::/32")[::2] == (6, 32)
    with pytest.raises(ValueError, match="not a number"):
        parse_cidr("10.0.0.0/x")


def test_vectorised_list_parser_matches_the_slow_one() -> None:
    rng = np.random.default_rng(5)
    lines = []
    for _ in range(3000):
        plen = int(rng.choice([32, 24, 16, 28]))
        a = int(rng.integers(0, 2**32)) & ((0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF)
        s = socket.inet_ntoa(a.to_bytes(4, "big"))
        lines.append(s if plen == 32 and rng.random() < 0.5 else f"{s}/{plen}")
    text = "# header\n" + "\n".join(lines) + "\n\n  10.9.8.7  # trailing comment\n"
    fast = parse_list(text.encode())
    slow = parse_list((text + "2001:db8::/32\n").encode())  # an IPv6 line: mixed path
    from bpfpolicy.kinds.xdp.sources import _parse_slow

    ref = _parse_slow(text.encode())
    assert not fast.errors and not ref.errors
    assert np.array_equal(fast.v4_addr, ref.v4_addr) and np.array_equal(fast.v4_plen, ref.v4_plen)
    assert np.array_equal(slow.v4_addr, ref.v4_addr) and len(slow.v6) == 1


def test_list_parser_reports_first_errors_and_counts_the_rest() -> None:
    data = "".join(f"bad{i}\n" for i in range(30)).encode()
    parsed = parse_list(data)
    assert parsed.error_count == 30 and len(parsed.errors) == 20
    assert parsed.errors[0] == (1, '"bad0" is not a valid IPv4 address or CIDR')


# --------------------------------------------------------------------------- lowering


def test_address_only_change_keeps_the_program(tmp_path: Path) -> None:
    (tmp_path / "l.txt").write_text("10.0.0.1\n10.0.0.2\n192.0.2.0/24\n")
    p = write(tmp_path, """\
      deny:
        - sourceFiles: [l.txt]
          protocols: [udp]
          ports: [53]
    """)
    a1 = compile_paths([p]).artifacts[0][1]
    (tmp_path / "l.txt").write_text("10.0.0.1\n10.0.0.3\n192.0.2.0/24\n198.51.100.0/24\n")
    p.write_text(p.read_text().replace("ports: [53]", "ports: [53, 5353]"))
    a2 = compile_paths([p]).artifacts[0][1]
    assert a1.manifest["program_hash"] == a2.manifest["program_hash"]
    assert a1.files["maps/v4_buckets.bin"] != a2.files["maps/v4_buckets.bin"]
    assert a1.files["maps/port_rules.bin"] != a2.files["maps/port_rules.bin"]


def test_manifest_describes_maps_attachments_and_counters(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[3]
    art = compile_paths([root / "policies" / "xdp" / "edge.yaml"]).artifacts[0][1]
    m = art.manifest
    assert m["programs"] == [{"name": "xdp_blocklist", "type": "xdp"}]
    assert m["attachments"] == [{"program": "xdp_blocklist", "type": "xdp", "interface": "veth-demo0",
                                 "netns": "bpfpolicy-demo", "mode": "auto"}]
    names = [r["name"] for r in m["counters"]["rules"]]
    assert names == ["bogons", "no-ssh-from-lab", "monitoring", "rateLimit", "failClosed"]
    for spec in m["maps"]:
        if "contents" in spec:
            data = art.files[spec["contents"]]
            rec = spec["key_size"] + spec["value_size"]
            assert len(data) == rec * spec["entries"]
            keys = [data[i:i + spec["key_size"]] for i in range(0, len(data), rec)]
            assert keys == sorted(keys), f"{spec['name']} contents must be sorted by key"
    src = art.files["prog.bpf.c"].decode()
    assert "@policy " in src and 'SEC("xdp")' in src and "bpf_metadata_bpfpolicy_policy" in src


def test_million_line_list_compiles(tmp_path: Path) -> None:
    """docs/xdp.md: 1M-line lists must work (timing lives in bench/xdp.py)."""
    rng = np.random.default_rng(2)
    addrs = np.unique(rng.integers(1 << 24, 2**32, 1_000_000, dtype=np.uint64).astype(np.uint32))
    text = "\n".join(socket.inet_ntoa(int(a).to_bytes(4, "big")) for a in addrs[:-1])
    (tmp_path / "big.txt").write_text("# a million addresses\n" + text + "\n10.0.0.0/8\n")
    p = write(tmp_path, """\
      deny:
        - sourceFiles: [big.txt]
    """)
    res = compile_paths([p])
    assert res.ok, [str(d) for d in res.diagnostics[:3]]
    art = res.artifacts[0][1]
    assert art.manifest["metadata"]["entries"]["v4"] == len(addrs)
    maps = {m["name"]: m for m in art.manifest["maps"]}
    assert maps["v4_buckets"]["entries"] > 0 and maps["v4_tbl24"]["entries"] > 0
