"""The reconcile controller: desired (compiled artifacts) vs observed (bpffs pins,
`bpftool -j`, the inventory) → plan → apply, in a loop. It reads artifact manifests
(docs/ARTIFACTS.md) and never a kind's internals, so a new kind needs no change here.

    config     the host config: policy source, state dir, interval
    source     where desired state comes from: a directory or a polled git ref
    desired    compile the tree into artifacts with digests
    observe    what is really in the kernel for each managed policy
    plan       desired vs observed → actions per policy
    apply      make the kernel match the plan without dropping enforcement
    reconcile  one cycle: lock → snapshot → desired → observe → plan → apply → status
    watch      the loop behind `bpfpolicy watch`
    state      inventory and status files in the state dir, written atomically
    paths      containment of every path the controller writes or deletes
    destroy    remove everything bpfpolicy loaded
    status     per-policy status for `bpfpolicy status`
    events     the JSON-lines event log
    stream     `events --follow`: kernel events of applied policies, interleaved
    metrics    Prometheus metrics served by `watch`
    notify     sd_notify readiness, watchdog and status without libsystemd
"""
