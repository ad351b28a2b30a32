"""bpfpolicy.kinds.xdp."""
