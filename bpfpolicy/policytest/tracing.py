"""TracingPolicy cases: a small interpreter of the policy's selectors (the reference
model: first matching selector wins, as Tetragon) and, as root on this host, the compiled
program loaded and attached for real while a child runs the case's syscall with the
case's binary — the events it posts and whether it dies are the compiled side's answer."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..kinds.tracing.spec import HOOK_SECTIONS
from .model import Case
from .subjects import Answer, Unsupported

# matchers the model interprets; any other selector key makes the case a skip, not a pass
MODELLED = ("matchArgs", "matchBinaries", "matchPIDs", "matchActions")
INT_OPS = {"Equal", "In", "NotEqual", "NotIn", "GT", "LT", "Mask", "InRange", "NotInRange"}
STR_OPS = {"Equal", "In", "NotEqual", "NotIn", "Prefix", "NotPrefix", "Postfix", "NotPostfix"}
# (hook, binary name) -> argv that makes that binary issue the hook's syscall with the
# case's argument; a case outside this table is model-only (said so in the output)
HOST_COMMANDS: dict[tuple[str, str], tuple[int, tuple[str, ...]]] = {
    ("sys_openat", "head"): (1, ("-c", "0", "{arg}")),
    ("sys_openat", "cat"): (1, ("{arg}",)),
    ("sys_mkdir", "mkdir"): (0, ("{arg}",)),
    ("sys_mkdirat", "mkdir"): (1, ("{arg}",)),
}
# a child that runs longer than this is hung (all commands above return at once)
CHILD_TIMEOUT_S = 10
# how long the ring buffer is polled after a child ends (events are written before it exits)
POLL_MS = 300
# consume() rounds per drain: other engineers' or the host's processes may hit the same
# hook (e.g. a loop opening /etc/shadow) and fill the ring; each round empties what is there
DRAIN_ROUNDS = 64
# an expected event that did not arrive is re-run this many times: while another process
# floods the same hook the 256 KiB ring is full and the child's event is dropped (seen on the
# shared host: a benchmark opening /etc/shadow-* a million times); a program that never posts
# still fails every run
MISSED_EVENT_RETRIES = 4


class ModelCannot(Exception):
    """The model cannot evaluate a matcher of the decisive selector chain: the case is skipped."""


def answer_text(selector: int | None, actions: list[str]) -> str:
    return "no match" if selector is None else f"selector {selector}: {', '.join(actions)}"


def expected_text(exp: dict[str, Any]) -> str:
    sel = exp.get("selector")
    return answer_text(None if sel in (None, "none") else int(sel), list(exp.get("actions") or []))


def _ints(values: list[Any]) -> list[int]:
    return [int(str(v), 0) for v in values]


def _int_op(op: str, v: int, values: list[Any]) -> bool:
    if op in ("InRange", "NotInRange"):
        inside = any(int(str(a), 0) <= v <= int(str(b), 0)
                     for a, b in (str(r).split(":", 1) for r in values))
        return inside == (op == "InRange")
    vals = _ints(values)
    return {"Equal": v in vals, "In": v in vals, "NotEqual": v not in vals, "NotIn": v not in vals,
            "GT": any(v > x for x in vals), "LT": any(v < x for x in vals),
            "Mask": any(v & x for x in vals)}[op]


def _str_op(op: str, v: str, values: list[Any]) -> bool:
    vals = [str(x) for x in values]
    hit = {"Equal": v in vals, "In": v in vals, "Prefix": any(v.startswith(x) for x in vals),
           "Postfix": any(v.endswith(x) for x in vals)}
    base = op[3:] if op.startswith("Not") else op
    base = {"Equal": "Equal"}.get(base, base)
    return hit[base] != op.startswith("Not")


class TracingSubject:
    kind = "TracingPolicy"

    def __init__(self, model: Any, policy: Path) -> None:
        self.spec = model.doc.data.get("spec") or {}
        self.name = (model.doc.data.get("metadata") or {}).get("name", "?")
        self.artifact = f"TracingPolicy/{self.name}"
        self.policy = policy

    def hook(self, name: str) -> tuple[str, int, dict[str, Any]]:
        for section in HOOK_SECTIONS:
            for i, h in enumerate(self.spec.get(section) or []):
                if name in (h.get("call"), h.get("event"), f"{h.get('subsystem')}/{h.get('event')}"):
                    return section, i, h
        raise Unsupported(f"the policy has no hook {name!r}")

    def answer(self, case: Case) -> Answer:
        ev = case.event or {}
        section, i, h = self.hook(ev["hook"])
        where = f"spec.{section}[{i}]"
        sels = h.get("selectors") or []
        if not sels:
            return Answer(answer_text(0, ["Post"]), where, [f"{where}: no selectors: every call posts"])
        chain = []
        for j, sel in enumerate(sels):
            ok, why = self._selector(sel, ev, h)
            chain.append(f"{where}.selectors[{j}]: {why}")
            if ok:
                actions = [str(a["action"]) for a in sel.get("matchActions") or []] or ["Post"]
                return Answer(answer_text(j, actions), f"{where}.selectors[{j}]", chain)
        chain.append("no selector matched: no event, no action")
        return Answer("no match", None, chain)

    def _selector(self, sel: dict[str, Any], ev: dict[str, Any], h: dict[str, Any]) -> tuple[bool, str]:
        """All matchers of one selector must hold (AND), as Tetragon."""
        for key in sel:
            if key not in MODELLED:
                raise ModelCannot(f"model cannot evaluate {key}")
        args = {int(k): v for k, v in (ev.get("args") or {}).items()}
        types = {int(a["index"]): str(a.get("type", "")) for a in h.get("args") or []}
        for m in sel.get("matchArgs") or []:
            idx, op = int(m["index"]), str(m["operator"])
            if idx not in args:
                raise Unsupported(f"the event gives no argument {idx} (matchArgs needs it)")
            if types.get(idx) in ("string", "char_buf", "filename", "path", "file") or isinstance(args[idx], str):
                if op not in STR_OPS:
                    raise ModelCannot(f"model cannot evaluate matchArgs operator {op} on a string")
                ok = _str_op(op, str(args[idx]), m.get("values") or [])
            else:
                if op not in INT_OPS:
                    raise ModelCannot(f"model cannot evaluate matchArgs operator {op}")
                ok = _int_op(op, int(args[idx]), m.get("values") or [])
            if not ok:
                return False, f"arg {idx} {op} {m.get('values')}: no match"
        for m in sel.get("matchBinaries") or []:
            op = str(m["operator"])
            if op not in STR_OPS or "binary" not in ev:
                raise ModelCannot(f"model cannot evaluate matchBinaries {op}" + ("" if "binary" in ev else " without event.binary"))
            if not _str_op(op, ev["binary"], m.get("values") or []):
                return False, f"binary {ev['binary']} {op} {m.get('values')}: no match"
        for m in sel.get("matchPIDs") or []:
            if m.get("followForks") or m.get("isNamespacePID") or "pid" not in ev:
                raise ModelCannot("model cannot evaluate matchPIDs with followForks/isNamespacePID or without event.pid")
            if not _int_op(str(m["operator"]), int(ev["pid"]), m.get("values") or []):
                return False, f"pid {ev['pid']} {m['operator']} {m.get('values')}: no match"
        return True, "every matcher holds: matches"

    # ------------------------------------------------------------------ compiled side
    def command(self, case: Case) -> list[str] | None:
        """The argv that makes the case's binary issue the hook's syscall, or None."""
        ev = case.event or {}
        binary = ev.get("binary")
        if not binary or "pid" in ev or not os.path.isfile(binary):
            return None
        spec = HOST_COMMANDS.get((ev["hook"], os.path.basename(binary)))
        if spec is None:
            return None
        idx, tmpl = spec
        arg = (ev.get("args") or {}).get(str(idx), (ev.get("args") or {}).get(idx))
        if not isinstance(arg, str):
            return None
        if any(str(k) != str(idx) for k in (ev.get("args") or {})):
            return None  # other arguments cannot be chosen through the command line
        return [binary, *(t.format(arg=arg) for t in tmpl)]


@contextmanager
def loaded(art: Any) -> Iterator[Any]:
    """Load the artifact's object, attach every program, poll `events` (as the kernel tests)."""
    from ..kernel import libbpf
    from ..kernel.ringbuf import RingBuffer

    obj = libbpf.BpfObject.open_mem(art.files["prog.bpf.o"], art.name.replace("-", "_"))
    links: list[Any] = []
    rb = None
    try:
        obj.load()
        for prog in art.manifest["programs"]:
            links.append(obj.program(prog["name"]).attach())
        records: list[bytes] = []
        rb = RingBuffer()
        rb.add(obj.map("events").fd, records.append)
        yield rb, records
    finally:
        if rb is not None:
            rb.close()
        for link in links:
            link.close()
        obj.close()


def _cleanup(argv: list[str], existed: bool) -> None:
    """A mkdir case leaves its directory (SIGKILL does not undo the call): remove it — only
    when the child created it (a generated probe may name an existing directory)."""
    if os.path.basename(argv[0]) == "mkdir" and not existed:
        shutil.rmtree(argv[-1], ignore_errors=True)


def run_host(subject: TracingSubject, pending: list[tuple[Any, list[str]]], notes: list[str]) -> None:
    """Compile, load and attach the policy; run each case's command; compare with the model."""
    import json
    import platform

    from ..kinds.base import CompileContext
    from ..kinds.tracing.events import decode_event
    from ..policy.compile import compile_paths
    from .runner import compiler_bug

    result = compile_paths([subject.policy], CompileContext())
    arts = [a for _, a in result.artifacts if a.kind == "TracingPolicy"]
    if not result.ok or not arts:
        notes.append(f"{subject.policy}: does not compile on this host: compiled side not run")
        return
    art = arts[0]
    manifest = json.loads(json.dumps(art.manifest, default=str)) | {"kind": art.kind, "name": art.name}
    by = f"kernel {platform.release()}"
    try:
        ctx = loaded(art)
        rb, records = ctx.__enter__()
    except OSError as e:
        notes.append(f"{subject.artifact}: load/attach failed on this host ({e}): compiled side not run")
        return
    try:
        for res, argv in pending:
            want = _expected_observation(res.model.value if res.model else "no match")
            attempt, got = 1, _run_child(argv, rb, records, manifest, decode_event)
            while attempt <= MISSED_EVENT_RETRIES and _missing_event(got, want):
                attempt, got = attempt + 1, _run_child(argv, rb, records, manifest, decode_event)
            res.compiled, res.compiled_by = got, by + (f" (attempt {attempt})" if attempt > 1 else "")
            if got != want:
                res.status = "fail"
                res.message = compiler_bug(f"{res.model.value if res.model else '?'} (so: {want})", got,
                                           f"tracepoint program, {' '.join(argv)}, {by}, {attempt} run(s)")
    finally:
        ctx.__exit__(None, None, None)


def _run_child(argv: list[str], rb: Any, records: list[bytes], manifest: dict[str, Any], decode: Any) -> str:
    """One run of the case's command under the attached program: what the kernel did."""
    existed = os.path.lexists(argv[-1])
    _drain(rb)  # another process's events must not leave the ring full for this child
    records.clear()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    child.wait(timeout=CHILD_TIMEOUT_S)
    rb.poll(POLL_MS)
    _drain(rb)
    _cleanup(argv, existed)
    evs = [e for e in (decode(r, manifest) for r in records) if e["pid"] == child.pid]
    return _observed(evs, child.returncode)


def _missing_event(got: str, want: str) -> bool:
    """Only an expected event that did not arrive is retried: a full ring drops events
    (bpf_ringbuf_reserve fails), it never invents one nor changes a kill."""
    return got.startswith("no event") and not want.startswith("no event") and got.split("; ")[1] == want.split("; ")[1]


def _drain(rb: Any) -> None:
    """Consume every record already in the ring (bounded: a flood cannot hold the run)."""
    for _ in range(DRAIN_ROUNDS):
        if rb.consume() <= 0:
            return


def _observed(evs: list[dict[str, Any]], rc: int) -> str:
    """What the kernel did to the child: the events it posted and how it ended."""
    posts = ", ".join(f"event selector {e['selector']}" for e in evs) or "no event"
    return f"{posts}; {'killed by SIGKILL' if rc == -9 else 'not killed'}"


def _expected_observation(model: str) -> str:
    if model == "no match":
        return "no event; not killed"
    sel, actions = model.split(": ", 1)
    acts = actions.split(", ")
    post = f"event {sel}" if "NoPost" not in acts else "no event"  # Tetragon: posts unless NoPost
    return f"{post}; {'killed by SIGKILL' if 'Sigkill' in acts else 'not killed'}"
