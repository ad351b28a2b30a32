"""bpfpolicy.codegen."""
