"""Policy unit tests (`bpfpolicy test`): `*.test.yaml` cases run against each kind's
reference model and against the compiled artifact (emulator, host kernel, QEMU guest)."""
