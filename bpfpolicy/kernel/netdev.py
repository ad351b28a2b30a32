"""Batch queries of per-device attachments: one netlink dump per network namespace
instead of one socket + query per interface, so a drift check over 100 XDP
attachments costs one round trip per namespace (kernel.xdp.query is the per-device
equivalent used when attaching)."""

from __future__ import annotations

from .netns import in_netns


def xdp_prog_ids(netns: str | None = None) -> dict[str, int | None]:
    """{ifname: attached XDP program id or None} for every interface in `netns`."""
    from pyroute2 import IPRoute

    out: dict[str, int | None] = {}
    with in_netns(netns), IPRoute() as ipr:
        for msg in ipr.get_links():
            name = msg.get_attr("IFLA_IFNAME")
            xdp = msg.get_attr("IFLA_XDP")
            pid = None
            if xdp is not None and (xdp.get_attr("IFLA_XDP_ATTACHED") or 0):
                pid = (xdp.get_attr("IFLA_XDP_PROG_ID") or xdp.get_attr("IFLA_XDP_DRV_PROG_ID")
                       or xdp.get_attr("IFLA_XDP_SKB_PROG_ID"))
            out[name] = int(pid) if pid else None
    return out
