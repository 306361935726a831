#!/usr/bin/env python3
"""Install nlp-transfer into the running Python with the torch build that fits this machine.

The one place for this logic (scripts/quickstart.sh and scripts/run_tests.sh call it). Standard
library only, so it runs before anything is installed.

- A torch that is already installed is never reinstalled. If its version is outside the range
  pyproject.toml supports, this stops with the command to fix it rather than let pip replace it.
- No torch and a GPU (``nvidia-smi`` runs): the supported range from PyPI, whose Linux wheels are
  CUDA builds.
- No torch and no GPU: torch 2.13.0 from PyTorch's CPU wheel index (about 200 MB; PyPI's Linux
  wheel of the same version is the CUDA build, which pulls several GB of CUDA libraries). The
  index is probed first, with a 5 s timeout and no retry; when it does not answer (offline CI, a
  firewall) the plain pin ``torch==2.13.0`` is installed from the configured indexes instead. That
  is a CPU build where a local CPU wheel is configured (find-links) and on macOS/Windows, but the
  CUDA build on Linux from PyPI.

Then ``pip install -e ".[EXTRAS]"`` installs the package, keeping that torch.

usage: python scripts/install.py [EXTRA ...] [--dry-run]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
CPU_TORCH = "2.13.0"  # the CPU build the project is tested with; must lie in pyproject's range
PROBE_TIMEOUT_S = 5.0
PIP_TIMEOUT_S = 10  # pip's socket timeout against the CPU index (its default here may be minutes)


class InstallError(Exception):
    """A machine state this script will not change by itself; the message says what to run."""


def torch_requirement(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """The torch requirement of the package's dependencies, e.g. ``torch>=2.6,<2.15``."""
    match = re.search(r'"(torch\s*[<>=!~][^"]*)"', pyproject.read_text(encoding="utf-8"))
    if match is None:
        raise InstallError(f"no torch requirement found in {pyproject}")
    return match.group(1).replace(" ", "")


def _release(version: str) -> tuple[int, ...]:
    """``2.13.0+cpu`` → ``(2, 13, 0)``; pre-release and local parts are ignored."""
    match = re.match(r"\d+(\.\d+)*", version)
    if match is None:
        raise InstallError(f"cannot read the version {version!r}")
    parts = [int(p) for p in match.group().split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()  # 2.6 == 2.6.0
    return tuple(parts)


def in_range(version: str, requirement: str) -> bool:
    """Whether ``version`` satisfies the comparison clauses (``>=``, ``>``, ``<=``, ``<``, ``==``,
    ``!=``) of ``requirement`` such as ``torch>=2.6,<2.15``."""
    clauses = re.findall(r"(>=|<=|==|!=|>|<)\s*([\w.]+)", requirement)
    have = _release(version)
    tests = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, "==": lambda a, b: a == b,
             "!=": lambda a, b: a != b, ">": lambda a, b: a > b, "<": lambda a, b: a < b}
    return all(tests[op](have, _release(bound)) for op, bound in clauses)


def installed_torch() -> Optional[str]:
    """The version of the torch installed for this Python (read from its metadata, not imported)."""
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


def has_gpu() -> bool:
    """Whether an NVIDIA GPU is usable: ``nvidia-smi -L`` exists and succeeds within 10 s."""
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def index_reachable(url: str = CPU_INDEX, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether the package index at ``url`` lists torch, asked once with a short timeout."""
    # GET, as pip asks (not every index answers HEAD); only the status line is read, not the page.
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/torch/", timeout=timeout) as response:
            return response.status == 200
    except (OSError, ValueError):  # URLError, HTTPError, timeouts and refused connections are OSErrors
        return False


def torch_command(python: str, requirement: str, torch_version: Optional[str], gpu: bool,
                  cpu_index_reachable: bool) -> Optional[list[str]]:
    """The pip command that installs torch, or None when the installed one is kept.

    Args:
        python: the interpreter to install into.
        requirement: the package's torch requirement (:func:`torch_requirement`).
        torch_version: the installed torch version, None when there is none.
        gpu: whether the machine has a usable NVIDIA GPU.
        cpu_index_reachable: whether PyTorch's CPU wheel index answered.

    Raises:
        InstallError: the installed torch is outside ``requirement``.
    """
    pip = [python, "-m", "pip", "install"]
    if torch_version is not None:
        if not in_range(torch_version, requirement):
            build = f'"{requirement}"' if gpu else f"torch=={CPU_TORCH} --index-url {CPU_INDEX}"
            raise InstallError(
                f"torch {torch_version} is installed but nlp-transfer needs {requirement}; install a supported "
                f"build first ({python} -m pip install {build}) and run this again."
            )
        return None
    if gpu:
        return pip + [requirement]
    if cpu_index_reachable:
        return pip + ["--index-url", CPU_INDEX, "--timeout", str(PIP_TIMEOUT_S), "--retries", "0",
                      f"torch=={CPU_TORCH}"]
    return pip + [f"torch=={CPU_TORCH}"]


def package_command(python: str, extras: list[str]) -> list[str]:
    """``pip install -e`` of this checkout with ``extras`` (e.g. ``test``, ``examples``)."""
    target = f"{ROOT}[{','.join(extras)}]" if extras else str(ROOT)
    return [python, "-m", "pip", "install", "-e", target]


def plan(extras: list[str], python: str = sys.executable) -> list[list[str]]:
    """The pip commands that install nlp-transfer on this machine, torch first when needed."""
    version, gpu = installed_torch(), has_gpu()
    # Probe only when the answer matters: a machine with torch or a GPU never waits on the network.
    reachable = version is None and not gpu and index_reachable()
    if version is not None and gpu and "+cpu" in version:
        print(f"install.py: note: torch {version} is a CPU build on a machine with a GPU; it is kept. For GPU "
              f"training replace it: {python} -m pip install --force-reinstall \"{torch_requirement()}\"",
              file=sys.stderr)
    torch = torch_command(python, torch_requirement(), version, gpu, reachable)
    return ([torch] if torch else []) + [package_command(python, extras)]


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Install nlp-transfer with the torch build that fits this machine.",
                                     allow_abbrev=False)
    parser.add_argument("extras", nargs="*", help="extras to install with the package (test, examples, lora)")
    parser.add_argument("--dry-run", action="store_true", help="print the pip commands instead of running them")
    args = parser.parse_args(argv)
    try:
        commands = plan(args.extras)
    except InstallError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for command in commands:
        print("+ " + " ".join(command), file=sys.stderr, flush=True)
        if not args.dry_run:
            code = subprocess.run(command).returncode
            if code:
                return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
