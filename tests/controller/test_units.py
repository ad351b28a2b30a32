"""Controller pieces that need no kernel: debouncing, the events log, source
fingerprints, atomic state files."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from bpfpolicy.controller import events
from bpfpolicy.controller.source import directory_revision
from bpfpolicy.controller.state import Store, gc_temporaries, write_json_atomic
from bpfpolicy.controller.watch import Trigger


def test_trigger_coalesces_a_burst() -> None:
    trig, stop = Trigger(), threading.Event()
    fired: list[set[str]] = []

    def loop() -> None:
        while not stop.is_set():
            reasons = trig.wait(0.05, stop)
            if reasons != {"interval"}:
                fired.append(reasons)

    t = threading.Thread(target=loop)
    t.start()
    for _ in range(2000):
        trig.poke("file")
    time.sleep(0.2)
    trig.poke("SIGHUP", immediate=True)
    time.sleep(0.2)
    stop.set()
    trig.poke("stop", immediate=True)
    t.join()
    assert fired[0] == {"file"} and len([f for f in fired if "file" in f]) <= 2
    assert {"SIGHUP"} in fired


def test_events_append_filter_and_follow(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    events.emit(log, "Applied", "create", policy="XDPBlocklist/a")
    events.emit(log, "VerifierFailed", "bad", policy="XDPBlocklist/b", type_="Warning", log="...")
    log.open("a").write("not json\n")
    assert [e["reason"] for e in events.read(log)] == ["Applied", "VerifierFailed"]
    assert [e["policy"] for e in events.read(log, policy="XDPBlocklist/b")] == ["XDPBlocklist/b"]
    got: list[dict] = []

    def follow() -> None:
        for ev in events.follow(log, poll=0.02):
            got.append(ev)
            if len(got) == 3:
                return

    t = threading.Thread(target=follow)
    t.start()
    time.sleep(0.1)
    events.emit(log, "Pruned", "gone", policy="XDPBlocklist/a")
    t.join(timeout=5)
    assert [e["reason"] for e in got] == ["Applied", "VerifierFailed", "Pruned"]
    assert all(json.loads(line) for line in log.read_text().splitlines() if line.startswith("{"))


def test_directory_revision_tracks_content_and_renames(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("x: 1\n")
    (tmp_path / ".hidden.yaml").write_text("x: 1\n")
    r1 = directory_revision([tmp_path])
    assert r1 == directory_revision([tmp_path]) and r1.startswith("dir@sha256:")
    (tmp_path / ".hidden.yaml").write_text("x: 2\n")
    assert directory_revision([tmp_path]) == r1  # hidden files are not policies
    (tmp_path / "new.yaml").write_text("y: 1\n")
    (tmp_path / "new.yaml").replace(tmp_path / "a.yaml")
    assert directory_revision([tmp_path]) != r1


def test_state_files_are_atomic_and_temporaries_collected(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.record_policy("XDPBlocklist/a", {"digest": "1"})
    store.record_policy("XDPBlocklist/b", {"digest": "2"})
    store.record_policy("XDPBlocklist/a", None)
    assert store.inventory() == {"XDPBlocklist/b": {"digest": "2"}}
    (tmp_path / ".inventory.json.x.tmp").write_text("{torn")
    assert gc_temporaries(tmp_path) == [str(tmp_path / ".inventory.json.x.tmp")]
    write_json_atomic(tmp_path / "status.json", {"policies": {}}, durable=False)
    assert store.status()["source"] == {}
    (tmp_path / "inventory.json").write_text("{not json")  # hand-edited: treated as absent
    assert store.inventory() == {}
    with store.lock() as got:
        assert got
        with Store(tmp_path).lock(blocking=False) as again:
            assert again is False
