"""The package as a user gets it: `pip wheel .`, installed into a fresh venv outside the
checkout, runs `validate` and `compile --dry-run` on a copy of policies/ with its own
schemas and templates (package data) — and refuses to run, naming what is missing, when
its schemas are gone (they used to be found beside the package, so a wheel silently
skipped schema checks and compile died with TemplateNotFound).

No network: the wheel is installed with --no-deps into a venv made with
--system-site-packages (PyYAML and friends come from Debian), and the remaining
dependencies are reached through a .pth naming this venv's site-packages (which holds no
`bpfpolicy` package, only an editable finder that a plain .pth path does not run)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SOURCES = ["bpfpolicy", "pyproject.toml", "README.md"]

pytestmark = pytest.mark.slow


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _build_wheel(tmp: Path) -> Path:
    """Build from a copy of the sources, so build/ and *.egg-info never land in the checkout."""
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, src / name)
    built = _run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation",
                  "-w", str(tmp / "dist")], cwd=src)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (tmp / "dist").glob("bpfpolicy-*.whl")
    return wheel


def _fresh_venv(tmp: Path, wheel: Path) -> Path:
    venv = tmp / "venv"
    created = _run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)], cwd=tmp)
    assert created.returncode == 0, created.stderr
    python = venv / "bin" / "python"
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=tmp)
    Path(site.stdout.strip(), "deps-from-test-venv.pth").write_text(sysconfig.get_path("purelib") + "\n")
    installed = _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                      "--no-index", str(wheel)], cwd=tmp)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return venv


def _package_dir(venv: Path, tmp: Path) -> Path:
    found = _run([str(venv / "bin" / "python"), "-c", "import bpfpolicy; print(bpfpolicy.__file__)"], cwd=tmp)
    assert found.returncode == 0, found.stderr
    return Path(found.stdout.strip()).parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("wheel")
    return tmp, _fresh_venv(tmp, _build_wheel(tmp))


def test_the_installed_wheel_validates_and_compiles_with_its_own_package_data(installed: tuple[Path, Path]) -> None:
    tmp, venv = installed
    package = _package_dir(venv, tmp)
    assert package.is_relative_to(venv) and not package.is_relative_to(REPO)
    where = _run([str(venv / "bin" / "python"), "-c",
                  "from bpfpolicy.resources import SCHEMAS_DIR, CODEGEN_DIR; print(SCHEMAS_DIR); print(CODEGEN_DIR)"],
                 cwd=tmp)
    schemas, templates = (Path(line) for line in where.stdout.split())
    assert schemas == package / "schemas" and any(schemas.glob("*.json"))
    assert templates == package / "codegen" / "templates" and any(templates.glob("*.j2"))

    policies = tmp / "policies"
    shutil.copytree(REPO / "policies", policies)
    shutil.copy2(REPO / "examples" / "host-config.yaml", tmp / "host-config.yaml")
    env = {**os.environ, "BPFPOLICY_CACHE": str(tmp / "cache")}
    env.pop("PYTHONPATH", None)
    bpfpolicy = str(venv / "bin" / "bpfpolicy")
    valid = _run([bpfpolicy, "validate", str(policies)], cwd=tmp, env=env)
    assert valid.returncode == 0, valid.stdout + valid.stderr
    compiled = _run([bpfpolicy, "compile", "--dry-run", "--inventory", str(tmp / "host-config.yaml"),
                     str(policies)], cwd=tmp, env=env)
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    assert "compiled " in compiled.stdout and "error" not in compiled.stdout.lower()


def test_the_installed_wheel_refuses_to_run_without_its_schemas(installed: tuple[Path, Path]) -> None:
    tmp, venv = installed
    shutil.rmtree(_package_dir(venv, tmp) / "schemas")
    policies = tmp / "policies-for-refusal"
    shutil.copytree(REPO / "policies", policies)
    for command in (["validate"], ["compile", "--dry-run"]):
        refused = _run([str(venv / "bin" / "bpfpolicy"), *command, str(policies)], cwd=tmp)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "schemas" in refused.stderr and "reinstall" in refused.stderr
        assert "Traceback" not in refused.stderr
