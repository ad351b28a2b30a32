"""TracingPolicy: Tetragon-style kernel hooks compiled to straight-line BPF C
(docs/tracing.md).

    kind       the Kind (schema, checks, compile): the one door the pipeline uses
    spec       Tetragon's vocabulary: operators, actions, argument types, limits
    schema     the native and Tetragon JSON Schemas, from one source
    check      Tetragon's semantic rules (one hook section, limits, names)
    lists      `spec.lists` of syscalls and `call: list:NAME`
    features   what a target kernel offers (kprobes, trampolines, BPF LSM, helpers)
    ir         the selector IR: one hook as typed nodes
    selectors  matchers as IR nodes (ints, strings, network, PID trees, namespaces)
    capture    each `args:` entry as an IR capture
    net        network operator values (addresses, ports, family, state)
    lower      a validated policy → IR → C through one backend per hook type
    backends/  one module per hook type (kprobe, tracepoint, lsm, fentry)
    events     the ring-buffer event layout and its decoder
"""
