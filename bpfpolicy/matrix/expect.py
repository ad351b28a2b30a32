"""`event-expect` lines: from what a policy author writes to what the runner checks.

Authors (policy annotations, the Tetragon corpus table in `corpus.py`) write

    event-expect posted|none <hook>[,<hook>...] [action=<Action>] [path=<exec path>] [any]

after an `exec-expect` line: the command of that line must (posted) or must not (none)
make the named hook of this artifact write an event. `<hook>` is a hook name of the
manifest (`sys_openat`, `security_file_open`, `*` for any hook of the policy) or, for the
process sensor, `process_exec` / `process_exit` / `process_fork`. `action=Sigkill`: the
event says that action ran; `path=`: the sensor's exec'd filename; `any`: events of any
process count (default: only the command's own pid — write `exec prog` as the last step
of the command so the program under test keeps that pid).

The runner (kt-runner.c) knows no event layout: this module turns such a line into field
offsets read from the artifact's manifest (`events.fields`, `events.hooks`), e.g.

    event-expect posted events hook=sys_openat[kprobe/__x64_sys_openat] pid@8 eq@20=0 u32@8=pid ...

A line that names something the manifest lacks becomes `event-expect fail <why>`, a
failure the table shows, never a silent pass.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

# tracing_process_v1 (kinds/tracing/process: PROC_EVENT, decode_record), field order.
_PROC_FIELDS = ("ktime", "type", "pid", "tid", "ppid", "uid", "auid", "exit_code", "path_len", "args_len",
                "mnt", "pidns", "net", "uts", "ipc", "cgroupns", "user", "cgroup_id", "comm", "path", "args")
_PROC_TYPES = {"process_exec": 1, "process_exit": 2, "process_fork": 3}
_USAGE = "event-expect posted|none <hook>[,<hook>...] [action=<Action>] [path=<exec path>] [any]"


def _proc_offsets() -> dict[str, int]:
    from ..kinds.tracing.process import PROC_EVENT

    codes = re.findall(r"(\d*)([A-Za-z])", PROC_EVENT.format.lstrip("<=>!@"))
    offsets: dict[str, int] = {}
    fmt, names = "<", iter(_PROC_FIELDS)
    for count, code in codes:
        n = int(count or 1)
        for _ in range(1 if code == "s" else n):
            offsets[next(names)] = struct.calcsize(fmt)
            fmt += f"{count}s" if code == "s" else code
    return offsets


def resolve_line(line: str, manifest: dict[str, Any]) -> str:
    """One author-form `event-expect` line -> the runner's form (unchanged if it already is)."""
    words = line.split()
    if len(words) >= 2 and words[1] == "fail":
        return line
    if len(words) >= 4 and words[3].startswith(("hook=", "sensor=")):
        return line  # already resolved
    try:
        return " ".join(_resolve(words, manifest))
    except ValueError as e:
        return f"event-expect fail {e}"


def _resolve(words: list[str], manifest: dict[str, Any]) -> list[str]:
    if len(words) < 3 or words[1] not in ("posted", "none"):
        raise ValueError(f"usage: {_USAGE}")
    want, names = words[1], [n for n in words[2].split(",") if n]
    opts: dict[str, str] = {}
    for w in words[3:]:
        key, eq, value = w.partition("=")
        if key not in ("action", "path", "any") or bool(eq) == (key == "any"):
            raise ValueError(f"unknown option {w!r}; {_USAGE}")
        opts[key] = value
    events = manifest.get("events") or {}
    layout = events.get("layout")
    mapname = events.get("map", "events")
    if layout == "tracing_event_v1":
        return [words[0], want, mapname, *_tracing(names, opts, events)]
    if layout == "tracing_process_v1":
        return [words[0], want, mapname, *_process(names, opts)]
    raise ValueError(f"the artifact's events have layout {layout!r}; event-expect knows "
                     "tracing_event_v1 and tracing_process_v1")


def _tracing(names: list[str], opts: dict[str, str], events: dict[str, Any]) -> list[str]:
    fields = events.get("fields") or {}
    hooks = events.get("hooks") or []
    if not fields:
        from ..kinds.tracing.events import event_layout

        fields = event_layout()["fields"]
    if "path" in opts:
        raise ValueError("path= is for the process sensor's process_exec")
    off = {k: int(v[0]) for k, v in fields.items()}
    if names == ["*"]:
        picked = list(range(len(hooks)))
        what = "hook=*"
    else:
        known = sorted({str(h.get("name")) for h in hooks})
        missing = [n for n in names if n not in known]
        if missing:
            raise ValueError(f"no hook {', '.join(missing)} in this policy (hooks: {', '.join(known) or 'none'})")
        picked = [i for i, h in enumerate(hooks) if h.get("name") in names]
        what = "hook=" + ",".join(f"{hooks[i]['name']}[{hooks[i].get('attach', '?')}]" for i in picked)
    out = [what.replace(" ", "_")]
    if "any" not in opts:
        out.append(f"pid@{off['pid']}")
    if names != ["*"]:
        out.append(f"eq@{off['hook']}=" + ",".join(str(i) for i in picked))
    if "action" in opts:
        ids = {str(name).lower(): int(i) for i, name in (events.get("actions") or {}).items()}
        if not ids:
            from ..kinds.tracing.events import event_layout

            ids = {str(name).lower(): int(i) for i, name in event_layout()["actions"].items()}
        if opts["action"].lower() not in ids:
            raise ValueError(f"unknown action {opts['action']!r} (known: {', '.join(sorted(ids))})")
        out.append(f"bits@{off['actions']}={1 << ids[opts['action'].lower()]:#x}")
    out += [f"u32@{off['pid']}=pid", f"text@{off['comm']}=comm", f"u32@{off['hook']}=hook",
            f"s32@{off['selector']}=selector", f"u32@{off['actions']}=actions"]
    return out


def _process(names: list[str], opts: dict[str, str]) -> list[str]:
    off = _proc_offsets()
    bad = [n for n in names if n not in _PROC_TYPES]
    if bad or not names:
        raise ValueError(f"the process sensor posts {', '.join(_PROC_TYPES)}, not {', '.join(bad) or '(none)'}")
    if "action" in opts:
        raise ValueError("action= is for policy hooks; the sensor runs no actions")
    out = [f"sensor={','.join(names)}"]
    if "any" not in opts:
        out.append(f"pid@{off['pid']}")
    out.append(f"eq@{off['type']}=" + ",".join(str(_PROC_TYPES[n]) for n in names))
    if "path" in opts:
        if not opts["path"] or len(opts["path"].encode()) >= 255:
            raise ValueError("path= needs a path shorter than the 255 bytes the sensor keeps")
        out.append(f"str@{off['path']}={opts['path']}")
    out += [f"u32@{off['pid']}=pid", f"u32@{off['ppid']}=ppid", f"text@{off['comm']}=comm",
            f"text@{off['path']}=path", f"u32@{off['exit_code']}=exit_code"]
    return out


def resolve_script(script: str, manifest: dict[str, Any] | None) -> str:
    """Every author-form `event-expect` line of a kernel-test script resolved against the
    artifact's manifest (None: no manifest, each such line becomes a failure)."""
    out = []
    for line in script.splitlines():
        if line.strip().startswith("event-expect ") or line.strip() == "event-expect":
            line = (resolve_line(line.strip(), manifest) if manifest is not None
                    else "event-expect fail no manifest.json: nothing says what the events look like")
        out.append(line)
    return "\n".join(out) + ("\n" if script.endswith("\n") else "")


def resolve_dir(d: Path, script: str) -> str:
    if "event-expect" not in script:
        return script
    try:
        manifest = json.loads((d / "manifest.json").read_text())
    except (OSError, ValueError):
        manifest = None
    return resolve_script(script, manifest if isinstance(manifest, dict) else None)
