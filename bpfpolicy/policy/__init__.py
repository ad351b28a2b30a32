"""bpfpolicy.policy."""
