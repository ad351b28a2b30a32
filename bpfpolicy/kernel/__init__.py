"""The kernel layer: the only code in bpfpolicy that talks to the kernel (ctypes,
netlink, bpftool). Nothing here is imported by validation or compilation, which must
run unprivileged.

    bpf      bpf(2) via ctypes: maps (incl. batches), pins, ids/info, PROG_TEST_RUN, links
    libbpf   libbpf.so.1 via ctypes: open, configure, load, pin, attach objects
    pins     pinned bpffs objects as scoped file descriptors
    bpffs    which filesystem a path lies on (bpffs-root checks)
    maps     fill maps from artifact contents and apply only the delta
    attach/  one Attacher per hook type (xdp, tc, cgroup, auto)
    xdp      XDP attach / atomic replace / query / detach over netlink
    tc       tcx links (>= 6.6) or clsact + cls_bpf filters
    cgroup   cgroup_skb attachments through bpf links
    netdev   per-device attachment queries, one RTM_GETLINK dump per netns
    netns    run code inside a named netns; veth test topologies
    ringbuf  BPF ring buffers through libbpf's ring_buffer API
    seccomp  install seccomp filters (no_new_privs + SECCOMP_SET_MODE_FILTER)
    bpftool  `bpftool -j` as data, with bookworm quirks fixed
    probe    what the kernel accepts, by loading/attaching given objects (for doctor)
"""
