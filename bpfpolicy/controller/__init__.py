"""The reconcile controller: desired (compiled artifacts) vs observed (bpffs pins,
`bpftool -j`, the inventory) → plan → apply, in a loop (`watch`).

One job per module: `config` (host config), `source` (directory or git checkout),
`desired` (compile to artifacts), `state` (inventory + status files, atomic), `observe`,
`plan`, `apply`, `watch`, `status`, `events`, `metrics`. The controller reads artifact
manifests (docs/ARTIFACTS.md) and never a kind's internals, so a new kind needs no
change here.
"""
