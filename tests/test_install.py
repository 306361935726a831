"""scripts/install.py: which torch build each kind of machine gets, and the README's two commands.

The choice is tested by calling the function that builds the pip command, and the command for a
machine without a GPU by a pip dry run (``--no-deps``: metadata only, nothing downloaded)."""

from __future__ import annotations

import http.server
import importlib.util
import json
import re
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_spec = importlib.util.spec_from_file_location("install", ROOT / "scripts" / "install.py")
install = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(install)

REQUIREMENT = install.torch_requirement()


def test_no_gpu_and_no_torch_takes_the_cpu_build_from_the_cpu_index():
    command = install.torch_command("py", REQUIREMENT, None, gpu=False, cpu_index_reachable=True)
    assert command[:4] == ["py", "-m", "pip", "install"]
    assert command[command.index("--index-url") + 1] == "https://download.pytorch.org/whl/cpu"
    assert command[command.index("--retries") + 1] == "0"
    assert int(command[command.index("--timeout") + 1]) <= 15
    assert command[-1] == "torch==2.13.0"
    assert "--extra-index-url" not in command, "PyPI next to the CPU index could win with its CUDA build"


def test_no_gpu_and_an_unreachable_cpu_index_falls_back_to_the_plain_pin():
    command = install.torch_command("py", REQUIREMENT, None, gpu=False, cpu_index_reachable=False)
    assert command == ["py", "-m", "pip", "install", "torch==2.13.0"]


def test_a_gpu_machine_gets_the_supported_range_from_pypi():
    command = install.torch_command("py", REQUIREMENT, None, gpu=True, cpu_index_reachable=True)
    assert command == ["py", "-m", "pip", "install", REQUIREMENT]
    assert REQUIREMENT.startswith("torch>=")


@pytest.mark.parametrize("gpu", [False, True])
@pytest.mark.parametrize("version", ["2.13.0+cpu", "2.6.0", "2.14.1+cu126"])
def test_an_installed_torch_in_range_is_never_reinstalled(version, gpu):
    assert install.torch_command("py", REQUIREMENT, version, gpu=gpu, cpu_index_reachable=True) is None


@pytest.mark.parametrize("version", ["2.3.1+cpu", "2.15.0"])
def test_an_installed_torch_out_of_range_stops_with_the_fix(version):
    with pytest.raises(install.InstallError, match=rf"torch {re.escape(version)} is installed but nlp-transfer needs "
                       r"torch>=.*; install a supported build first \(py -m pip install torch==2.13.0 --index-url"):
        install.torch_command("py", REQUIREMENT, version, gpu=False, cpu_index_reachable=True)


def test_the_cpu_pin_lies_in_the_supported_range():
    assert install.in_range(install.CPU_TORCH, REQUIREMENT)
    assert install.in_range("2.6", "torch>=2.6,<2.15") and install.in_range("2.14.9", "torch>=2.6,<2.15")
    assert not install.in_range("2.15.0", "torch>=2.6,<2.15") and not install.in_range("2.5.1", "torch>=2.6,<2.15")


def test_the_package_is_installed_editable_with_its_extras():
    assert install.package_command("py", ["test"]) == ["py", "-m", "pip", "install", "-e", f"{ROOT}[test]"]
    assert install.package_command("py", []) == ["py", "-m", "pip", "install", "-e", str(ROOT)]


def _fake_nvidia_smi(folder: Path, exit_code: int) -> None:
    tool = folder / "nvidia-smi"
    tool.write_text(f"#!/bin/sh\nexit {exit_code}\n")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)


@pytest.mark.parametrize("exit_code, expected", [(None, False), (9, False), (0, True)])
def test_a_gpu_is_one_whose_nvidia_smi_runs(tmp_path, monkeypatch, exit_code, expected):
    # nvidia-smi's protocol here is only its exit status: 9 is what it returns when no driver is loaded.
    if exit_code is not None:
        _fake_nvidia_smi(tmp_path, exit_code)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert install.has_gpu() is expected


class _Index(http.server.BaseHTTPRequestHandler):
    """A package index that lists torch (PEP 503: one page per project)."""

    def do_GET(self):
        found = self.path == "/whl/cpu/torch/"
        self.send_response(200 if found else 404)
        self.end_headers()
        if found:
            self.wfile.write(b"<a href='torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl'>torch</a>")

    def log_message(self, *args):
        pass


def test_the_cpu_index_probe_answers_quickly_either_way():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Index)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        assert install.index_reachable(f"{base}/whl/cpu", timeout=5)
        assert not install.index_reachable(f"{base}/elsewhere", timeout=5)
    finally:
        server.shutdown()
    with socket.socket() as closed:  # a port nobody listens on: refused at once
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    assert not install.index_reachable(f"http://127.0.0.1:{port}/whl/cpu", timeout=5)


def _dry_run(command: list[str], tmp_path: Path) -> dict:
    report = tmp_path / "report.json"
    proc = subprocess.run(command + ["--dry-run", "--report", str(report), "--no-deps", "--ignore-installed",
                                     "--quiet", "--retries", "0", "--timeout", "10"],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.skip(f"pip cannot resolve {command[-1]} here (no reachable index or local wheel): {proc.stderr[-300:]}")
    return json.loads(report.read_text())


def test_the_command_for_this_machine_without_a_gpu_resolves_a_cpu_build(tmp_path):
    if install.has_gpu():
        pytest.skip("this machine has a GPU; the CPU choice is tested on machines without one")
    reachable = install.index_reachable()
    command = install.torch_command(sys.executable, REQUIREMENT, None, gpu=False, cpu_index_reachable=reachable)
    report = _dry_run(command, tmp_path)
    [item] = report["install"]
    assert item["metadata"]["name"] == "torch"
    version, url = item["metadata"]["version"], item["download_info"]["url"]
    assert version.split("+")[0] == install.CPU_TORCH
    if reachable:
        assert version.endswith("+cpu") and url.startswith(install.CPU_INDEX.replace("/whl/cpu", "")), url
    elif not version.endswith("+cpu"):
        pytest.skip(f"the CPU index is unreachable and the plain pin resolved PyPI's build {version} ({url}): "
                    "on Linux that is the CUDA build, as the README says")


def test_dry_run_prints_the_plan_and_installs_nothing():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "install.py"), "--dry-run", "test"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("+ ")]
    assert lines[-1] == f"+ {sys.executable} -m pip install -e {ROOT}[test]"
    assert len(lines) == 1, "torch is installed here, so it is kept"


def test_both_readme_commands_share_the_install_script_and_ci_runs_the_readme_test_command():
    for script in ("quickstart.sh", "run_tests.sh"):
        text = (ROOT / "scripts" / script).read_text()
        assert "scripts/install.py" in text, script
        assert "pip install" not in text, f"{script}: the install logic lives in scripts/install.py only"
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)\n```", section, re.S)
    assert blocks == ["bash scripts/quickstart.sh", "bash scripts/run_tests.sh"]
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith(("#", "set ", "cd "))]
    assert ci == ["bash scripts/run_tests.sh"]


def test_every_subpackage_ships_in_the_wheel():
    """An editable install finds any folder; a wheel holds only the packages pyproject.toml lists."""
    import tomllib

    root = Path(__file__).resolve().parents[1]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(root).parts) for p in (root / "nlp_transfer").rglob("__init__.py")}
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
