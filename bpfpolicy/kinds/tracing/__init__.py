"""bpfpolicy.kinds.tracing."""
