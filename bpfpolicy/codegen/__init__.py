"""Code generation shared by every kind that emits BPF C:

    render     one jinja2 environment over templates/ (package data) with C-escaping filters
    build      clang -O2 -g -target bpf through a content-addressed cache
    verify     load a compiled object through the kernel verifier, attaching nothing
    templates/ the *.bpf.c.j2 templates (shipped in the wheel, found via importlib.resources)
"""
