"""`compile --dry-run` as root runs the verifier; a rejection names the policy rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bpfpolicy.codegen.build import build_bpf
from bpfpolicy.codegen.render import policy_marker, resolve_markers

BROKEN = resolve_markers("""#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_prog(struct xdp_md *ctx)
{
\tvoid *data = (void *)(long)ctx->data;
\t/* MARKER */
\tunsigned char first = *(unsigned char *)(data + 20);  /* no bounds check */
\treturn first == 7 ? XDP_DROP : XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
""".replace("MARKER", policy_marker("policies/edge.yaml:9:7", "spec.deny[1]")))


@pytest.mark.kernel
def test_verifier_rejection_points_at_the_rule(tmp_path: Path, root_required: None, clang_required: None) -> None:
    from bpfpolicy.codegen.verify import verify_artifact

    obj = build_bpf(BROKEN, name="broken", use_cache=False).object
    (tmp_path / "prog.bpf.o").write_bytes(obj)
    (tmp_path / "prog.bpf.c").write_text(BROKEN)
    (tmp_path / "manifest.json").write_text(json.dumps({"kind": "XDPBlocklist", "name": "edge", "object": "prog.bpf.o"}))
    (diag,) = verify_artifact(tmp_path)
    assert (diag.file, diag.line, diag.col, diag.path) == ("policies/edge.yaml", 9, 7, "spec.deny[1]")
    assert "the kernel verifier rejected XDPBlocklist/edge" in diag.message
    assert "outside of the packet" in diag.message or "invalid access to packet" in diag.message
