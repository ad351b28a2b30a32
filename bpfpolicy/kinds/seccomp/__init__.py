"""Seccomp: OCI/Docker profiles compiled to classic BPF in pure Python.

    tables    syscall numbers per ABI (generated from kernel headers)
    arch      architectures, actions, errno names
    resolve   Docker/containers-common extensions resolved against a target
    compiler  the model → cBPF (arch check, range-tree dispatch, 64-bit arg compares)
    bpf       instruction encoding and disassembly
    emulator  a cBPF interpreter + the kernel's action-cache eligibility check
"""
