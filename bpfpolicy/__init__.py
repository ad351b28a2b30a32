"""bpfpolicy: policy-as-code for the Linux kernel.

Layers, each a module with one job (dependencies point down):
    cli → controller → kinds → (load, validate, codegen, build) ; kernel serves controller/tests.
"""

__version__ = "0.1.0"
