"""Metrics read at scrape time: a real `bpfpolicy watch` serving /metrics, real UDP
datagrams dropped by a NetworkPolicy deny rule on a veth; the per-rule counter equals the
datagrams sent, and the policy's series vanish once the policy is removed."""

from __future__ import annotations

import socket
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_events_export import NETPOL, Watch, _config

from conftest import udp_received

RULE = "NetworkPolicy/deny-peer:spec.ingressDeny[0]"
SENT = 7


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scrape(port: int) -> dict[tuple[str, frozenset], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def _rule_series(samples: dict, name: str) -> list[float]:
    return [v for (n, labels), v in samples.items() if n == name and ("rule", RULE) in labels]


def _wait(pred, what: str, timeout: float = 60):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got = pred()
        except OSError:
            got = None
        if got:
            return got
        time.sleep(0.3)
    pytest.fail(f"timed out waiting for {what}")


@pytest.mark.kernel
def test_rule_counter_equals_packets_sent_and_series_vanish(ctl, veth, tmp_path: Path) -> None:  # noqa: ANN001
    port = _port()
    _config(ctl, f'metricsAddress: ":{port}"\n', veth)  # no host: loopback
    src = tmp_path / "np"
    src.mkdir()
    (src / "np.yaml").write_text(NETPOL.format(peer=veth.ip4_b))
    w = Watch(ctl, src)
    try:
        _wait(lambda: _rule_series(_scrape(port), "bpfpolicy_rule_packets_total") == [0.0], "the rule's series")
        cond = _scrape(port)
        key = frozenset({"kind": "NetworkPolicy", "policy": "NetworkPolicy/ep", "type": "Ready", "status": "True"}.items())
        assert cond[("bpfpolicy_policy_condition", key)] == 1.0, [k for k in cond if k[0].endswith("condition")]
        assert udp_received(veth, count=SENT, wait=0.2) == 0
        # read when scraped: no reconcile cycle is needed for the counter to move
        assert _wait(lambda: _rule_series(_scrape(port), "bpfpolicy_rule_packets_total") == [float(SENT)],
                     f"{SENT} packets counted")
        assert _rule_series(_scrape(port), "bpfpolicy_rule_bytes_total")[0] >= SENT * 28  # IPv4 + UDP headers
        # the deny-peer policy removed (another takes its place, so the source is not empty)
        (src / "np.yaml").write_text(NETPOL.replace("deny-peer", "deny-other").format(peer="192.0.2.1"))
        _wait(lambda: not _rule_series(_scrape(port), "bpfpolicy_rule_packets_total"), "the series to vanish")
        gone = _scrape(port)
        assert not any(("rule", RULE) in labels for (_n, labels) in gone), "stale series"
        assert any(("rule", RULE.replace("deny-peer", "deny-other")) in labels for (_n, labels) in gone)
    finally:
        err = w.stop()
    assert "Traceback" not in err, err


def test_metrics_bind_loopback_by_default() -> None:
    from bpfpolicy.controller import metrics

    assert metrics.DEFAULT_HOST == "127.0.0.1"
    port = _port()
    metrics.serve(f":{port}")
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    addrs = {a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)} - {"127.0.0.1", "127.0.1.1"}
    for addr in addrs:  # not reachable on the host's other addresses
        with pytest.raises(OSError), socket.create_connection((addr, port), timeout=2):
            pass
