"""The kernel layer: the only code in bpfpolicy that talks to the kernel.

* `bpf`     — bpf(2) via ctypes: map ops incl. batches, pins, ids/info, PROG_TEST_RUN, links
* `libbpf`  — libbpf.so.1 via ctypes: open/configure/load objects, pin, attach
* `xdp`     — XDP attach / atomic replace / query / detach (netlink, optionally in a netns)
* `netns`   — run code inside a named netns; veth test topologies
* `maps`    — fill maps from artifact contents and apply only the delta

Nothing here is imported by validation or compilation (they must run unprivileged).
"""
