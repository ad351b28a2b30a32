"""bpfpolicy.kinds.netpol."""
