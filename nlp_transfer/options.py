"""Command-line options: generated from :class:`TrainConfig`, parsed without abbreviations,
shown in grouped help, and recorded without the Hub token.

Standard library only (plus the config and error modules), so that building the parser and
answering ``--help`` import nothing heavy.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shlex
import shutil
import sys
import textwrap
import types
import typing
from typing import Any, NoReturn, Optional

from .errors import UserInputError, check_positive_int

EXIT_USER_ERROR = 2

# The help sections of `train`, in order. Every TrainConfig field names one in metadata["group"].
HELP_GROUPS = {
    "data": "data",
    "model": "model and transfer strategy",
    "optimisation": "optimisation",
    "evaluation": "evaluation",
    "speed": "speed",
    "output": "output folder and checkpoints",
    "hub": "Hub and model card",
}


class Parser(argparse.ArgumentParser):
    """An argument parser that takes no abbreviations and reports a usage error on one line.

    Abbreviations are off because a prefix such as ``--tok`` would silently mean ``--token``
    (and escape the scrubbing of the recorded command line); a future option could also change
    what an abbreviation means.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs["allow_abbrev"] = False
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        # Our type checks name their option themselves: "argument --x: --x must be ..." says it twice.
        message = re.sub(r"^argument (\S+): (?=\1 )", "", message).rstrip(".")
        self.exit(EXIT_USER_ERROR, f"error: {message}; see '{self.prog} --help'.\n")


class HelpFormatter(argparse.HelpFormatter):
    """Help as wide as the terminal (at most 100 columns), options in a 30-column margin, lines
    never broken inside a hyphenated word (``--no-compact-embeddings`` stays whole)."""

    def __init__(self, prog: str):
        super().__init__(prog, max_help_position=30, width=min(100, shutil.get_terminal_size().columns))

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


_SAYS_DEFAULT = re.compile(r"\(default\b|\bDefault:")


def with_default(help_text: str, default: Any) -> str:
    """``help_text`` with its default shown once: nothing for None/False or when the text already says it."""
    if default is None or default is False or default is argparse.SUPPRESS or _SAYS_DEFAULT.search(help_text):
        return help_text
    shown = "on" if default is True else str(default).replace("%", "%%")
    return f"{help_text} (default: {shown})"


class PositiveInt:
    """An argparse ``type`` for options that count something: refuses 0, negatives and non-integers."""

    def __init__(self, option: str):
        self.option = option
        self.__name__ = "positive integer"  # what argparse calls the type in its own messages

    def __call__(self, text: str) -> int:
        try:
            return check_positive_int(int(text), self.option)
        except (ValueError, UserInputError):
            raise argparse.ArgumentTypeError(f"{self.option} must be a positive integer; got {text!r}.") from None


def _unwrap_optional(tp: Any) -> Any:
    """``Optional[int]`` → ``int``; other types pass through."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _add_flag(section: Any, flag: str, dest: str, default: bool, help_text: str) -> None:
    """A boolean option: ``--x`` / ``--no-x`` when it is on by default, else the plain flag ``--x``."""
    negation = "--no-" + flag[2:]
    if default:
        action = section.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=True)
        action.help = with_default(help_text, True)  # set afterwards: some Pythons append their own default
    else:
        section.add_argument(flag, dest=dest, action="store_true", help=help_text)
        # The negation of an off-by-default flag means nothing; still accepted, not listed.
        section.add_argument(negation, dest=dest, action="store_false", default=argparse.SUPPRESS,
                             help=argparse.SUPPRESS)


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> dict[str, Any]:
    """Add one option per dataclass field (``foo_bar`` → ``--foo-bar``) to the help section its
    ``group`` metadata names, with its help text, metavar and default; returns the sections by key.

    Args:
        parser: the parser of the command.
        cls: a dataclass whose fields all carry ``help`` and ``group`` metadata.
    """
    hints = typing.get_type_hints(cls)
    sections = {key: parser.add_argument_group(title) for key, title in HELP_GROUPS.items()}
    for f in dataclasses.fields(cls):
        section, help_text = sections[f.metadata["group"]], f.metadata.get("help", "")
        if f.metadata.get("positional"):
            section.add_argument(f.name, metavar=f.metadata.get("metavar", f.name.upper()), help=help_text)
            continue
        flag = "--" + f.name.replace("_", "-")
        base = _unwrap_optional(hints[f.name])
        if base is bool:
            _add_flag(section, flag, f.name, f.default, help_text)
            continue
        # nargs/const let an option also stand alone (``--resume`` = ``--resume latest``).
        extra = {key: f.metadata[key] for key in ("nargs", "const", "choices", "metavar") if key in f.metadata}
        section.add_argument(flag, type=base, default=f.default, help=with_default(help_text, f.default), **extra)
    return sections


def config_from_args(cls: type, args: argparse.Namespace) -> Any:
    """Build the dataclass ``cls`` from parsed arguments (validation runs in its constructor)."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def token_values(args: argparse.Namespace) -> list[str]:
    """Token values that must never be recorded: ``--token`` and the token environment variables."""
    values = [getattr(args, "token", None), os.environ.get("HF_TOKEN"), os.environ.get("HUGGING_FACE_HUB_TOKEN")]
    return [value for value in values if value]


def _recorded_words(argv: list[str], secrets: list[str]) -> list[str]:
    """The command's words without ``--token`` and its value, and with any secret value masked
    wherever else it appears (so no spelling, and no other option carrying it, can record it).
    A value under 8 characters (no real token is that short) is masked only as a whole word, so
    that a dummy token such as ``x`` does not garble every path."""
    words, skip = [], False
    for word in argv:
        if skip:
            skip = False
        elif word == "--token":
            skip = True
        elif not word.startswith("--token="):
            for secret in secrets:
                word = "***" if word == secret else word.replace(secret, "***") if len(secret) >= 8 else word
            words.append(word)
    return words


def recorded_command_line(argv: Optional[list[str]], secrets: tuple[str, ...] | list[str] = ()) -> str:
    """The command as typed, for the model card and summary, without the Hub token (never recorded)."""
    words = sys.argv[1:] if argv is None else list(argv)
    return shlex.join(["nlp-transfer", *_recorded_words(words, list(secrets))])


def resume_command(command_line: str, resume: Optional[str]) -> str:
    """The recorded ``command_line`` of a train run with ``--resume`` (alone: the newest checkpoint)
    in place of any ``--resume`` it had.

    Args:
        command_line: the shell-quoted command, as :func:`recorded_command_line` recorded it (no token).
        resume: the ``--resume`` value the run was started with (None when it had none).
    """
    words, kept, skip = shlex.split(command_line), [], False
    for i, word in enumerate(words):
        if skip:
            skip = False
        elif word == "--resume":
            skip = resume is not None and i + 1 < len(words) and words[i + 1] == resume
        elif not word.startswith("--resume="):
            kept.append(word)
    return shlex.join([*kept, "--resume"])
