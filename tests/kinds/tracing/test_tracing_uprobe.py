"""TracingPolicy `uprobes` on this host: a C program built here and libc's `malloc`,
probed through the uprobe PMU (kernel/attach/uprobe.py), real ring-buffer events and a
real SIGKILL; plus the validation rows (file:line:col errors)."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from bpfpolicy.kinds import Artifact
from bpfpolicy.kinds.tracing.elf import Elf
from bpfpolicy.kinds.tracing.events import decode_event

from helpers.tracing import compile_one, errors, manifest, ring, validate, write

PROG = r"""
#include <stdio.h>
#include <stdlib.h>
void *volatile sink;
__attribute__((noinline)) int bpfpolicy_target(int x, const char *s)
{ __asm__ volatile(""); return x + (s[0] != 0); }
int main(int argc, char **argv)
{
	static const char *names[] = {"even", "odd"};
	int n = argc > 1 ? atoi(argv[1]) : 3, t = 0;
	/* a non-sleepable uprobe cannot fault a page in: touch the strings' page first */
	t += *(volatile const char *)names[0] - *(volatile const char *)names[0];
	for (int i = 0; i < n; i++)
		t += bpfpolicy_target(i, names[i % 2]);
	for (int i = 2; i < argc; i++) {
		sink = malloc(atoi(argv[i]));  /* kept: a malloc/free pair is optimised away */
		free(sink);
	}
	printf("%d\n", t);
	return 0;
}
"""


@pytest.fixture(scope="module")
def prog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("uprobe")
    (d / "prog.c").write_text(PROG)
    subprocess.run(["cc", "-O1", "-o", str(d / "prog"), str(d / "prog.c")], check=True)
    return d / "prog"


def libc_of(binary: Path) -> str:
    """libc's path as the dynamic loader resolves it for `binary` (ldd)."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    return next(line.split("=>")[1].split()[0] for line in out.splitlines() if "libc.so" in line)




def attached(art: Artifact):  # noqa: ANN201
    """Load the object and attach every program through the uprobe Attacher."""
    from bpfpolicy.kernel.attach.uprobe import attach_section

    return ring(art, attach=attach_section)


def run_events(art: Artifact, argv: list[str]) -> tuple[subprocess.CompletedProcess, list[dict]]:
    with attached(art) as reader:
        proc = subprocess.run(argv, capture_output=True, text=True)
        recs = reader.poll(300)
    return proc, [decode_event(r, manifest(art)) for r in recs]


def policy(tmp_path: Path, binary: str, symbol: str, args: str, selector: str) -> Path:
    """One uprobe on `binary`:`symbol`; `args` and `selector` in YAML flow style."""
    return write(tmp_path, f"uprobes:\n- path: {binary}\n  symbols: [{symbol}]\n"
                 f"  args: [{args}]\n  selectors:\n  - {selector}\n")


@pytest.mark.parametrize("n", [5])
@pytest.mark.usefixtures("root_required", "clang_required")
@pytest.mark.kernel
def test_each_call_posts_one_event_with_its_arguments(tmp_path: Path, prog: Path, n: int) -> None:
    path = policy(tmp_path, str(prog), "bpfpolicy_target",
                  "{index: 0, type: int32}, {index: 1, type: string}",
                  "matchActions: [{action: Post}]")
    art, diags = compile_one(path)
    assert art is not None, diags
    assert art.manifest["programs"][0]["section"] == f"uprobe/{prog}:bpfpolicy_target"
    proc, got = run_events(art, [str(prog), str(n)])
    assert proc.returncode == 0
    mine = [e for e in got if e["pid"] == proc_pid(got, prog)]
    assert [(e["args"][0]["value"], e["args"][1]["value"]) for e in mine] == \
        [(i, "odd" if i % 2 else "even") for i in range(n)]
    assert {e["action"][0] for e in mine} == {"Post"}


def proc_pid(events: list[dict], prog: Path) -> int | None:
    return next((e["pid"] for e in events if e["binary"] == str(prog)), None)


@pytest.mark.usefixtures("root_required", "clang_required")
@pytest.mark.kernel
def test_libc_malloc_posts_only_matching_sizes(tmp_path: Path, prog: Path) -> None:
    libc = libc_of(prog)
    path = policy(tmp_path, libc, "malloc", "{index: 0, type: size_t}",
                  "{matchBinaries: [{operator: In, values: [" + str(prog) + "]}], "
                  "matchArgs: [{index: 0, operator: Equal, values: ['77777']}], "
                  "matchActions: [{action: Post}]}")
    art, diags = compile_one(path)
    assert art is not None, diags
    proc, got = run_events(art, [str(prog), "0", "77777", "12345", "77777"])
    assert proc.returncode == 0
    sizes = [e["args"][0]["value"] for e in got if e["binary"] == str(prog)]
    assert sizes == [77777, 77777], got


@pytest.mark.usefixtures("root_required", "clang_required")
@pytest.mark.kernel
def test_sigkill_on_matching_argument_kills_the_process(tmp_path: Path, prog: Path) -> None:
    path = policy(tmp_path, str(prog), "bpfpolicy_target", "{index: 0, type: int32}",
                  "{matchArgs: [{index: 0, operator: Equal, values: ['3']}], "
                  "matchActions: [{action: Sigkill}]}")
    art, diags = compile_one(path)
    assert art is not None, diags
    short, _ = run_events(art, [str(prog), "3"])  # calls with 0, 1, 2: never matches
    killed, _ = run_events(art, [str(prog), "5"])
    assert short.returncode == 0 and short.stdout.strip() == "6"
    assert killed.returncode == -signal.SIGKILL and killed.stdout == ""


def test_offsets_resolve_like_symbols(prog: Path) -> None:
    """The ELF reader places a symbol at the file offset the uprobe PMU expects: the
    bytes there are the function's first instruction bytes as objdump shows them."""
    off = Elf.open(prog).functions()["bpfpolicy_target"]
    dump = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(prog)], capture_output=True,
                          text=True, check=True).stdout
    line = next(ln for ln in dump.splitlines() if ln.endswith("<bpfpolicy_target>:"))
    vaddr = int(line.split()[0], 16)
    assert Elf.open(prog).vaddr_to_offset(vaddr) == off


# ---------------------------------------------------------------- validation: one row each
BAD = [
    ("relative", "path: bin/prog\n  symbols: [main]", "path", "is not an absolute path"),
    ("none", "path: /bin/true", "", "needs symbols or offsets"),
    ("nosym", "path: /bin/true\n  symbols: [no_such_function_xyz]", "symbols[0]", 'no function "no_such_function_xyz"'),
    ("refs", "path: /bin/true\n  offsets: [16]\n  refCtrOffsets: [1, 2]", "refCtrOffsets", "pairs with offsets"),
    ("ret", "path: /bin/true\n  symbols: [main]\n  return: true", "return", "uretprobes"),
    ("override", "path: /bin/true\n  offsets: [16]\n  selectors:\n  - matchActions: [{action: Override, argError: -1}]",
     "selectors[0].matchActions[0].action", "Override is not available on uprobes"),
]


@pytest.mark.parametrize(("name", "body", "where", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_uprobe_is_refused_at_its_line(tmp_path: Path, name: str, body: str, where: str,
                                           message: str) -> None:
    path = write(tmp_path, "uprobes:\n- " + body + "\n", name=name)
    errs = errors(validate(path))
    assert errs, f"{name}: accepted"
    d = errs[0]
    assert message in d.message and d.line > 0
    assert str(d.path).endswith(where) or where == "", (d.path, where)
