"""The policy pipeline's front half, independent of any kind:

    load         files (YAML multi-document, JSON) → Documents that remember line:col
    diagnostics  Diagnostic (`file:line:col: path: message`), PolicyError, BuildError, did_you_mean
    validate     identify the kind, check its JSON Schema (bpfpolicy/schemas), run its checks
    compile      validated policies → artifacts through each kind; write them (docs/ARTIFACTS.md)
"""
