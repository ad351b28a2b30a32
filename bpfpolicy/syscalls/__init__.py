"""bpfpolicy.syscalls."""
