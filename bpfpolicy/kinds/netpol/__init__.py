"""NetworkPolicy: Cilium-style L3/L4 policy for the endpoints of one host
(docs/networkpolicy.md).

    kind       the Kind (schema, checks, compile): the one door the pipeline uses
    schema     the native and Cilium JSON Schemas, from one source
    rules      Cilium's semantic checks and the parsed rule model
    inventory  the host's endpoints and how to enforce on each (cgroup, tc)
    lower      policies + inventory → one enforcement plan per endpoint → map contents
    packets    frames for PROG_TEST_RUN vectors (kernel-test.txt, tests, bench)
    events     decode verdict events from the `np_events` ring buffer
"""
