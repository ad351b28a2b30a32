"""Issue #11: policy text is data. Whatever a policy (or its file's path) says, the
generated C has the same code as a benign twin policy: no extra helper calls, sections,
relocations or preprocessor lines, and no comment that user text could end.

Every example runs `bpfpolicy compile` (real clang), so example counts are modest."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from bpfpolicy.codegen.build import CFLAGS, include_flags, vmlinux_header
from bpfpolicy.codegen.render import (
    COMMENT_SAFE,
    c_comment,
    find_marker,
    policy_marker,
    resolve_markers,
    to_bytes,
)

BIN = Path(sys.executable).with_name("bpfpolicy")
NO_SHRINK = [Phase.explicit, Phase.reuse, Phase.generate]  # every example runs clang: no slow shrinking
EXAMPLES = int(os.environ.get("BPFPOLICY_INJECTION_EXAMPLES", "30"))
CLANG = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, phases=NO_SHRINK,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# Pieces that have broken out of C comments/strings before, mixed into arbitrary text.
FRAGMENTS = ["*/", "/*", "*\\", "\\*", "\\\n", "\\", "??/", "??=", "//", "\n", "\r", '"', "'", "\0",
             "#include \"/etc/shadow\"", "#define tp_post(e) bpf_send_signal(9)", "@policy #0:1:1 x",
             "\x01F", "%2F", "\u2028", "\udcff", "é"]
TEXT = st.one_of(
    st.text(max_size=40),
    st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
    st.binary(max_size=40).map(lambda b: b.decode("utf-8", "surrogateescape")),
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=4)), max_size=8).map("".join),
)
# A file or directory name: any bytes but '/' and NUL.
NAME_BYTES = st.one_of(
    st.binary(min_size=1, max_size=60),
    st.lists(st.sampled_from([f.encode("utf-8", "surrogateescape") for f in FRAGMENTS] + [b"x", b" "]),
             min_size=1, max_size=6).map(b"".join),
).map(lambda b: b.replace(b"/", b"_").replace(b"\0", b"_")).filter(lambda b: b not in (b".", b".."))
DNS = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?\Z")


# ------------------------------------------------------------------- the inert alphabet


@given(st.one_of(TEXT, st.text()), st.integers(4, 300))
def test_comment_text_is_inert(text: str, limit: int) -> None:
    out = c_comment(text, limit)
    assert set(out) <= COMMENT_SAFE | {"."}
    assert len(out) <= min(limit, 200)
    for bad in ("*/", "/*", "\\", "??", "\n", "@"):
        assert bad not in out


@given(NAME_BYTES, NAME_BYTES, st.integers(1, 10**6), st.integers(1, 10**4), TEXT)
def test_markers_round_trip_and_are_inert(d: bytes, f: bytes, line: int, col: int, path: str) -> None:
    file = os.fsdecode(d + b"/" + f)
    src = resolve_markers(f"int a;\n/* {policy_marker(f'{file}:{line}:{col}', path)} */\nint b;\n")
    m = find_marker(src, 2)
    assert m is not None and (m.file, m.line, m.col, m.path) == (file, line, col, path or "$")
    assert to_bytes(m.file) == d + b"/" + f
    for body in comments(src):
        assert re.fullmatch(r"[A-Za-z0-9 _.,:=+\-\[\]()#%@]*", body), body


# ------------------------------------------------------------------- the C, lexed


def comments(src: str) -> list[str]:
    """Bodies of the comments of C source (strings and char constants skipped)."""
    out, i, n = [], 0, len(src)
    while i < n:
        if src.startswith("/*", i):
            j = src.index("*/", i + 2)
            out.append(src[i + 2:j])
            i = j + 2
        elif src.startswith("//", i):
            j = src.find("\n", i)
            out.append(src[i + 2:] if j < 0 else src[i + 2:j])
            i = n if j < 0 else j
        elif src[i] in "\"'":
            q, i = src[i], i + 1
            while src[i] != q:
                i += 2 if src[i] == "\\" else 1
            i += 1
        else:
            i += 1
    return out


def directives(src: str) -> list[str]:
    """Preprocessor lines once comments are gone (numbers masked: sizes differ)."""
    code = re.sub(r"/\*.*?\*/", " ", src, flags=re.S)
    return sorted(re.sub(r"\d+", "N", ln.strip()) for ln in code.splitlines() if ln.lstrip().startswith("#"))


def assert_inert_comments(src: str) -> None:
    assert "??" not in src.replace('"', "")  # no trigraph anywhere (c_string escapes '?')
    for body in comments(src):
        assert "/*" not in body and "\\\n" not in body and not body.rstrip().endswith("\\"), body
        assert "??" not in body, body


def objdump(obj: Path) -> dict[str, set[str]]:
    tool = shutil.which("llvm-objdump") or "llvm-objdump"
    dis = subprocess.run([tool, "-d", "-r", str(obj)], capture_output=True, text=True, check=True).stdout
    heads = subprocess.run([tool, "-h", str(obj)], capture_output=True, text=True, check=True).stdout
    syms = subprocess.run([tool, "-t", str(obj)], capture_output=True, text=True, check=True).stdout
    return {
        "helpers": set(re.findall(r"\bcall (0x[0-9a-f]+|\d+)\b", dis)),
        "relocs": {_unhash(m.split()[-1]) for m in re.findall(r"R_BPF_\w+\s+\S+", dis)},
        "sections": set(re.findall(r"^\s*\d+ (\S+)", heads, re.M)),
        "globals": {_unhash(ln.split()[-1]) for ln in syms.splitlines() if " g " in ln},
    }


def _unhash(symbol: str) -> str:
    """Map names carrying a hash of the rule identities (`np_stats_fbd132`) compare by stem."""
    return re.sub(r"_[0-9a-f]{6}$", "_HASH", symbol)


def compile_cli(policy: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "BPFPOLICY_CACHE": str(out.parent / "cache")}
    return subprocess.run([str(BIN), "compile", "--out", os.fsencode(out), *extra, os.fsencode(policy)],
                          capture_output=True, env=env, check=False)


def policy_sources(out: Path) -> list[Path]:
    """The policy's generated C: every artifact but the process sensor that any
    TracingPolicy brings along (its C has no policy text in it)."""
    return [c for c in out.rglob("prog.bpf.c") if c.parent.name != "bpfpolicy-process-sensor"]


def check_build(proc: subprocess.CompletedProcess[bytes], out: Path, twin: dict, policy_id: bytes) -> None:
    """Either a clean rejection (exit 1, no traceback) or an object equivalent to the twin."""
    text = proc.stdout + proc.stderr
    assert b"Traceback" not in text, text.decode(errors="replace")
    assert proc.returncode in (0, 1), text
    if proc.returncode:
        return
    (c_file,) = policy_sources(out)
    src = c_file.read_text()
    assert_inert_comments(src)
    assert directives(src) == twin["directives"]
    got = objdump(c_file.with_suffix(".o"))
    assert got["sections"] == twin["obj"]["sections"]
    assert got["helpers"] <= twin["obj"]["helpers"], "a policy string added a helper call"
    assert got["relocs"] <= twin["obj"]["relocs"] and got["globals"] <= twin["obj"]["globals"]
    assert rodata_string(c_file.with_suffix(".o"), "bpf_metadata_bpfpolicy_policy") == policy_id


def rodata_string(obj: Path, symbol: str) -> bytes:
    """The bytes of a NUL-terminated .rodata variable, read back from the object."""
    tool = shutil.which("llvm-objdump") or "llvm-objdump"
    syms = subprocess.run([tool, "-t", str(obj)], capture_output=True, text=True, check=True).stdout
    m = re.search(rf"^([0-9a-f]+) .*\.rodata\s+([0-9a-f]+) {symbol}$", syms, re.M)
    assert m, syms
    dump = obj.with_suffix(".rodata.bin")
    subprocess.run([shutil.which("llvm-objcopy") or "llvm-objcopy", "-O", "binary", "--only-section=.rodata",
                    str(obj), str(dump)], capture_output=True, check=True)
    data = dump.read_bytes()
    off, size = int(m.group(1), 16), int(m.group(2), 16)
    return data[off:off + size].rstrip(b"\0")


def write_policy(root: Path, dirname: bytes, filename: bytes, doc: dict) -> Path:
    d = Path(os.fsdecode(root)) / os.fsdecode(dirname)
    d.mkdir(parents=True, exist_ok=True)
    p = d / os.fsdecode(filename + b".yaml")
    p.write_bytes(json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogateescape"))
    return p


# ------------------------------------------------------------------- the kinds


def tracing_doc(name: str, label: str, op: str, value: str, bop: str, binary: str) -> dict:
    return {"apiVersion": "bpfpolicy.io/v1", "kind": "TracingPolicy", "metadata": {"name": name},
            "spec": {"kprobes": [{"call": "sys_openat", "syscall": True,
                                  "args": [{"index": 1, "type": "string", "label": label}],
                                  "selectors": [{"matchArgs": [{"index": 1, "operator": op, "values": [value]}],
                                                 "matchBinaries": [{"operator": bop, "values": [binary]}]}]}]}}


def xdp_doc(name: str, deny: str, allow: str) -> dict:
    return {"apiVersion": "bpfpolicy.io/v1", "kind": "XDPBlocklist", "metadata": {"name": name},
            "spec": {"interfaces": ["veth0"], "deny": [{"name": deny, "sources": ["192.0.2.0/24"]}],
                     "allow": [{"name": allow, "sources": ["192.0.2.7/32"]}]}}


def netpol_doc(name: str) -> dict:
    return {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "metadata": {"name": name},
            "spec": {"endpointSelector": {"matchLabels": {"app": "demo"}},
                     "ingress": [{"fromCIDR": ["10.0.0.0/8"],
                                  "toPorts": [{"ports": [{"port": "22", "protocol": "TCP"}]}]}]}}


def inventory(root: Path, endpoint: str) -> Path:
    p = root / "inventory.json"
    p.write_text(json.dumps({"endpoints": [{"name": endpoint, "labels": {"app": "demo"},
                                            "interfaces": [{"name": "veth0", "netns": "x"}],
                                            "addresses": ["10.77.0.1"]}]}))
    return p


@cache
def twin(kind: str, root: str) -> dict:
    """The benign policy every example is compared with."""
    base = Path(root) / f"twin-{kind}"
    base.mkdir(parents=True, exist_ok=True)
    extra: tuple[str, ...] = ()
    if kind == "tracing":
        doc = tracing_doc("benign", "path", "Prefix", "/etc/x", "In", "/usr/bin/x")
    elif kind == "xdp":
        doc = xdp_doc("benign", "deny", "allow")
    else:
        doc, extra = netpol_doc("benign"), ("--inventory", str(inventory(base, "demo")))
    p = write_policy(base, b"d", b"p", doc)
    proc = compile_cli(p, base / "out", *extra)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (c_file,) = policy_sources(base / "out")
    return {"directives": directives(c_file.read_text()), "obj": objdump(c_file.with_suffix(".o"))}


STRING_OPS = ["Equal", "NotEqual", "Prefix", "NotPrefix", "Postfix", "NotPostfix"]


@pytest.mark.slow
@CLANG
@given(name=st.one_of(DNS, TEXT), label=TEXT, op=st.sampled_from(STRING_OPS), value=TEXT,
       bop=st.sampled_from(["In", "NotIn", "Prefix", "NotPrefix", "Postfix", "NotPostfix"]), binary=TEXT,
       dirname=NAME_BYTES, filename=NAME_BYTES)
def test_tracing_policy_text_stays_data(tmp_path_factory: pytest.TempPathFactory, clang_required: None,
                                        name: str, label: str, op: str, value: str, bop: str, binary: str,
                                        dirname: bytes, filename: bytes) -> None:
    base = tmp_path_factory.mktemp("tp")
    p = write_policy(base, dirname, filename, tracing_doc(name, label, op, value, bop, binary))
    proc = compile_cli(p, base / "out")
    check_build(proc, base / "out", twin("tracing", str(tmp_path_factory.getbasetemp())),
                to_bytes(f"TracingPolicy/{name}"))


@pytest.mark.slow
@CLANG
@given(name=st.one_of(DNS, TEXT), deny=TEXT, allow=TEXT, dirname=NAME_BYTES, filename=NAME_BYTES)
def test_xdp_policy_text_stays_data(tmp_path_factory: pytest.TempPathFactory, clang_required: None,
                                    name: str, deny: str, allow: str, dirname: bytes, filename: bytes) -> None:
    base = tmp_path_factory.mktemp("xdp")
    p = write_policy(base, dirname, filename, xdp_doc(name, deny, allow))
    proc = compile_cli(p, base / "out")
    check_build(proc, base / "out", twin("xdp", str(tmp_path_factory.getbasetemp())),
                to_bytes(f"XDPBlocklist/{name}"))


@pytest.mark.slow
@CLANG
@given(name=st.one_of(DNS, TEXT), endpoint=st.one_of(DNS, TEXT), dirname=NAME_BYTES, filename=NAME_BYTES)
def test_network_policy_text_stays_data(tmp_path_factory: pytest.TempPathFactory, clang_required: None,
                                        name: str, endpoint: str, dirname: bytes, filename: bytes) -> None:
    base = tmp_path_factory.mktemp("np")
    p = write_policy(base, dirname, filename, netpol_doc(name))
    proc = compile_cli(p, base / "out", "--inventory", str(inventory(base, endpoint)))
    check_build(proc, base / "out", twin("netpol", str(tmp_path_factory.getbasetemp())),
                to_bytes(f"NetworkPolicy/{endpoint}"))


# ------------------------------------------------------------------- the reported attacks

HOSTNAME = '/etc/hostname*\\ #define tp_post(e) bpf_send_signal(9) /\\'
SHADOW = '*\\ #include "/etc/shadow" \\*'
XDP_DIR = b"x*\\ #define bpf_map_lookup_elem(m, k) 0 \\*"
ATTACKS = [  # (kind, field, value): one row per attack from issue #11
    ("tracing", "value", HOSTNAME),
    ("tracing", "value", SHADOW),
    ("tracing", "label", SHADOW),
    ("tracing", "binary", HOSTNAME),
    ("tracing", "dir", XDP_DIR),
    ("xdp", "dir", XDP_DIR),
    ("xdp", "dir", SHADOW.encode()),
    ("xdp", "rule", "deny*\\ #define bpf_map_lookup_elem(m, k) 0 \\*"),
    ("xdp", "rule", SHADOW),
]


def dependencies(c_file: Path, kind: str) -> str:
    """The files clang reads for this source (`clang -M`)."""
    extra = ["-D__TARGET_ARCH_x86", "-I", str(vmlinux_header().parent)] if kind == "tracing" else []
    out = subprocess.run(["clang", *CFLAGS, *include_flags(), *extra, "-M", str(c_file)],
                         capture_output=True, text=True, check=True)
    return out.stdout


@pytest.mark.parametrize("kind,field,value", ATTACKS)
def test_reported_attack_is_inert(kind: str, field: str, value: str | bytes, tmp_path: Path,
                                  clang_required: None) -> None:
    dirname = value if field == "dir" else b"d"
    if kind == "tracing":
        args = {"name": "t", "label": "l", "op": "Prefix", "value": "/etc/x", "bop": "In", "binary": "/bin/x"}
        args.update({field: value} if field in args else {})
        doc = tracing_doc(**args)  # type: ignore[arg-type]
    else:
        doc = xdp_doc("edge", value if field == "rule" else "deny", "allow")  # type: ignore[arg-type]
    p = write_policy(tmp_path, dirname, b"p", doc)  # type: ignore[arg-type]
    proc = compile_cli(p, tmp_path / "out")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (c_file,) = policy_sources(tmp_path / "out")
    dis = subprocess.run(["llvm-objdump", "-d", str(c_file.with_suffix(".o"))], capture_output=True,
                         text=True, check=True).stdout
    assert not re.search(r"\bcall (0x6d|109)\b", dis)  # bpf_send_signal (helper 109)
    deps = dependencies(c_file, kind)
    assert "/etc/shadow" not in deps and "hostname" not in deps
    assert_inert_comments(c_file.read_text())
    if kind == "xdp":
        assert_xdp_drops_listed_source(c_file.with_suffix(".o"), c_file.parent)


def assert_xdp_drops_listed_source(obj_path: Path, art_dir: Path) -> None:
    """BPF_PROG_TEST_RUN: the listed source is dropped, its allowed host and others pass."""
    if os.geteuid() != 0:
        pytest.skip("BPF_PROG_TEST_RUN needs root")
    from bpfpolicy.kernel import bpf, maps
    from bpfpolicy.kernel.libbpf import BpfObject
    from bpfpolicy.kinds.xdp import packets as pk

    manifest = json.loads((art_dir / "manifest.json").read_text())
    with BpfObject.open_mem(obj_path.read_bytes(), "xdp_inj") as obj:
        obj.load()
        for m in manifest["maps"]:
            if "contents" in m:
                maps.apply_map_contents(obj.map(m["name"]).fd, None, (art_dir / m["contents"]).read_bytes(),
                                        m["key_size"], m["value_size"], m["percpu"], m["type"])
        fd = obj.program("xdp_blocklist").fd
        verdicts = {src: bpf.prog_test_run(fd, pk.packet(src)).retval
                    for src in ("192.0.2.5", "192.0.2.7", "198.51.100.1")}
    assert verdicts == {"192.0.2.5": 1, "192.0.2.7": 2, "198.51.100.1": 2}  # XDP_DROP=1, XDP_PASS=2
