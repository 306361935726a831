"""Optional extras: checking that the packages of ``pip install 'nlp-transfer[EXTRA]'`` are there.

Export to ONNX and the HTTP server need packages the core does not install. The command that
needs them calls :func:`require_extra` first, so a missing package is one ``error:`` line naming
the extra to install (exit 2), not an ``ImportError`` traceback halfway through the work.
"""

from __future__ import annotations

import importlib

from .errors import UserInputError

# What each extra of pyproject.toml brings, as importable module names.
EXTRAS: dict[str, tuple[str, ...]] = {
    "onnx": ("onnx", "onnxruntime", "onnxscript"),
    "serve": ("fastapi", "uvicorn"),
}


def missing_modules(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported here (empty when all are installed).

    They are imported, not only looked up: a package that is there but broken (e.g. built for
    another numpy) is as unusable as a missing one. Only the commands that need them call this.
    """
    missing = []
    for name in EXTRAS[extra]:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def require_extra(extra: str, purpose: str) -> None:
    """Refuse, with the install command, when a package of the optional ``extra`` is missing.

    Args:
        extra: a key of :data:`EXTRAS` (``"onnx"`` or ``"serve"``).
        purpose: what needs it, e.g. ``"nlp-transfer export"``.

    Raises:
        UserInputError: some package of the extra is not installed.
    """
    missing = missing_modules(extra)
    if missing:
        raise UserInputError(
            f"{purpose} needs the optional package(s) {', '.join(missing)}, which are not installed; "
            f"install them with: pip install 'nlp-transfer[{extra}]'"
        )
