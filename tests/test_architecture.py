"""The architecture's contracts (`.importlinter`, run by `make lint`) hold, and fail when broken."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))


def lint_imports(python_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(python_path)}
    return subprocess.run([LINT_IMPORTS, "--config", str(ROOT / ".importlinter"), "--no-cache"], cwd=python_path,
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip


def test_the_contracts_hold():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_contracts_fail_when_a_layer_imports_upwards_or_the_front_imports_torch(tmp_path):
    copy = tmp_path / "tree"
    shutil.copytree(ROOT / "codecomp", copy / "codecomp", ignore=shutil.ignore_patterns("__pycache__"))
    with (copy / "codecomp/serve/dispatch/batching.py").open("a") as module:
        module.write("\nfrom codecomp.serve.service import completion  # noqa\n")  # dispatch importing service
    with (copy / "codecomp/serve/service/selection.py").open("a") as module:
        module.write("\nimport torch  # noqa\n")  # the HTTP process loading torch
    with (copy / "codecomp/models/base.py").open("a") as module:
        module.write("\nimport codecomp.evaluation  # noqa\n")  # models importing a higher layer
    result = lint_imports(copy)
    assert result.returncode == 1, result.stdout + result.stderr
    out = " ".join(result.stdout.split())
    assert "codecomp.serve.dispatch.batching -> codecomp.serve.service.completion" in out
    assert "codecomp.serve.service.selection -> torch" in out
    assert "codecomp.models.base -> codecomp.evaluation" in out


def test_the_http_process_loads_no_torch():
    program = (
        "import sys\n"
        "import codecomp.serve.api.app, codecomp.serve.api.cli, codecomp.serve.dispatch.supervisor\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
