"""watch's trigger waits for a written file to be closed (issue #15): a 14 MB list written
in place must be read whole, and a finished write should not wait a fixed debounce."""

from __future__ import annotations

import threading

from bpfpolicy.controller import watch
from bpfpolicy.controller.watch import Trigger


def test_an_open_write_holds_the_cycle_until_max_delay() -> None:
    trig, stop = Trigger(), threading.Event()
    trig.poke("file", writing="/src/list.txt")  # modified, never closed (a writer keeping it open)
    assert trig.wait(5.0, stop) == {"file"}
    assert trig.waited >= watch.MAX_DELAY  # bounded by MAX_DELAY, not released by the quiet period


def test_a_closed_write_fires_and_clears() -> None:
    trig, stop = Trigger(), threading.Event()
    trig.poke("file", writing="/src/a.yaml")
    trig.poke("file", writing="/src/list.txt")
    trig.poke("file", closed="/src/a.yaml")
    trig.poke("file", closed="/src/list.txt")  # every written file closed: SETTLE applies
    assert trig.wait(5.0, stop) == {"file"}
    assert trig.wait(0.01, stop) == {"interval"}  # nothing left pending


def test_sighup_is_not_held_back_by_an_open_write() -> None:
    trig, stop = Trigger(), threading.Event()
    trig.poke("file", writing="/src/list.txt")
    trig.poke("SIGHUP", immediate=True)
    assert trig.wait(5.0, stop) == {"file", "SIGHUP"}


def test_a_directory_echo_does_not_reset_the_quiet_period() -> None:
    """watchdog reports the parent directory `modified` right after a file's close; that
    echo must not turn the 2 ms settle back into the 10 ms debounce."""
    trig, stop = Trigger(), threading.Event()
    trig.poke("file", writing="/src/a.yaml")
    trig.poke("file", closed="/src/a.yaml")
    trig.poke("file", echo=True)
    assert trig._quiet == watch.SETTLE  # noqa: SLF001 - the state the echo must not change
    assert trig.wait(5.0, stop) == {"file"}
