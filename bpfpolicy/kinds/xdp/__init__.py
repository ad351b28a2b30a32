"""XDPBlocklist: drop traffic by source address at the XDP hook (docs/xdp.md).

    kind     the Kind (schema, checks, compile): the one door the pipeline uses
    sources  inline `sources` and `sourceFiles` address lists, parsed and merged
    lower    rules → program features + map contents (layout chosen by measurement)
    packets  frames for test vectors (kernel-test.txt, PROG_TEST_RUN tests, bench/xdp.py)
"""
