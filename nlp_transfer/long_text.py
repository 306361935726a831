"""How texts longer than ``--max-length`` are read: the ``--long-text`` settings, checked and saved.

Three ways, one :class:`LongText` value that training, evaluation, prediction and the card share:

- ``truncate``: everything past ``max_length`` tokens is cut (what ``pipeline(truncation=True)`` does).
- ``head-tail``: the first and the last tokens of the budget are kept and the middle is dropped
  (Sun et al. 2019, "How to Fine-Tune BERT for Text Classification?", found 128 head + 382 tail
  tokens best on long reviews); ``head_fraction`` of the budget goes to the head.
- ``sliding-window``: a text becomes windows of ``max_length`` tokens, consecutive windows sharing
  ``stride`` tokens, at most ``max_windows`` per text. Each window is a training row with the
  text's label; scoring runs every window and pools the logits per text (``window_pooling``),
  so metrics and predictions count texts, not windows.

The settings are saved twice with a model: as fields of ``training_config.json`` and under
:data:`MODEL_CONFIG_KEY` in ``config.json`` (a folder without the first still knows how it reads
texts). This module imports nothing heavy: the config and the CLI use it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Optional

from .errors import UserInputError

LONG_TEXT_MODES = ("truncate", "head-tail", "sliding-window")
WINDOW_POOLINGS = ("mean", "max")
# 16 windows of 128 tokens with the default overlap read about 1,550 tokens (≈ 1,100 words) of a text.
DEFAULT_MAX_WINDOWS = 16
# Sun et al. (2019): 128 head tokens of a 510-token budget.
DEFAULT_HEAD_FRACTION = 0.25
MODEL_CONFIG_KEY = "nlp_transfer_long_text"
# Which mode each setting belongs to (TrainConfig field → mode).
_OWNERS = {"stride": "sliding-window", "window_pooling": "sliding-window", "max_windows": "sliding-window",
           "head_fraction": "head-tail"}


def default_stride(max_length: int) -> int:
    """The default overlap of consecutive windows: a quarter of the window (at least 1 token)."""
    return max(1, max_length // 4)


@dataclass(frozen=True)
class LongText:
    """How a text longer than the model's window is read (see the module docstring).

    Attributes:
        mode: ``truncate``, ``head-tail`` or ``sliding-window``.
        stride: tokens shared by consecutive windows (sliding-window).
        window_pooling: ``mean`` or ``max`` of the window logits per text (sliding-window).
        max_windows: windows kept per text, from its start (sliding-window).
        head_fraction: share of the token budget kept from the start of the text (head-tail).
    """

    mode: str = "truncate"
    stride: Optional[int] = None
    window_pooling: Optional[str] = None
    max_windows: Optional[int] = None
    head_fraction: Optional[float] = None

    @property
    def windows(self) -> bool:
        """Whether one text may become several model rows."""
        return self.mode == "sliding-window"

    @classmethod
    def from_config(cls, config: Any) -> "LongText":
        """The settings of a :class:`~nlp_transfer.config.TrainConfig` (already checked)."""
        return cls(**{name: getattr(config, name, None) for name in ("stride", "window_pooling", "max_windows",
                                                                     "head_fraction")},
                   mode=getattr(config, "long_text", None) or "truncate")

    @classmethod
    def from_saved(cls, settings: Mapping[str, Any], model_config: Any, max_length: int, where: str) -> "LongText":
        """The settings a model was trained with: ``training_config.json``, else ``config.json``, else truncate.

        Args:
            settings: the model's ``training_config.json`` (``{}`` when it has none).
            model_config: its ``config.json`` as loaded by ``transformers``.
            max_length: the window the model reads (checked against the stride).
            where: the model's name, for messages.

        Raises:
            UserInputError: the saved values are damaged.
        """
        if settings.get("long_text"):
            values = {"mode": settings["long_text"], **{k: settings.get(k) for k in _OWNERS}}
        else:
            values = dict(getattr(model_config, MODEL_CONFIG_KEY, None) or {})
        try:
            long_text = cls(**values)
        except TypeError:
            raise UserInputError(f"the long-text settings saved with {where!r} ({values!r}) are damaged; fix "
                                 "training_config.json / config.json or re-run the training that wrote them.") from None
        return long_text.checked(max_length, f"the long-text settings saved with {where!r}")

    def checked(self, max_length: int, source: str = "") -> "LongText":
        """These settings with each one validated for ``max_length``; raises :class:`UserInputError` otherwise."""
        prefix = f"{source}: " if source else ""
        if self.mode not in LONG_TEXT_MODES:
            raise UserInputError(f"{prefix}--long-text {self.mode!r} is unknown; choose one of: "
                                 f"{', '.join(LONG_TEXT_MODES)}.")
        for name, mode in _OWNERS.items():
            if getattr(self, name) is not None and self.mode != mode:
                flag = "--" + name.replace("_", "-")
                raise UserInputError(f"{prefix}{flag} applies to --long-text {mode} only, but --long-text is "
                                     f"{self.mode}; drop {flag} or pass --long-text {mode}.")
        if self.mode == "sliding-window":
            self._check_windows(max_length, prefix)
        if self.mode == "head-tail":
            fraction = self.head_fraction
            if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not (
                    math.isfinite(fraction) and 0 <= fraction <= 1):
                raise UserInputError(f"{prefix}--head-fraction must be a number from 0 (tail only) to 1 (head only, "
                                     f"as truncate); got {fraction!r}. 0.25 keeps 128 of 512 tokens from the head.")
        return self

    def _check_windows(self, max_length: int, prefix: str) -> None:
        for name in ("stride", "max_windows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserInputError(f"{prefix}--{name.replace('_', '-')} must be a positive integer; got {value!r}.")
        if self.stride >= max_length:
            raise UserInputError(
                f"{prefix}--stride {self.stride} is not below --max-length {max_length}: consecutive windows share "
                f"--stride tokens, so a window of {max_length} would never move on; pass --stride "
                f"{default_stride(max_length)} (a quarter of the window) or less.")
        if self.window_pooling not in WINDOW_POOLINGS:
            raise UserInputError(f"{prefix}--window-pooling {self.window_pooling!r} is unknown; choose one of: "
                                 f"{', '.join(WINDOW_POOLINGS)}.")

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-ready values (what ``config.json`` records)."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    def describe(self, max_length: int) -> str:
        """One sentence for summaries and messages."""
        if self.mode == "head-tail":
            return f"head+tail: the first {self.head_fraction:g} of the {max_length}-token budget from the start, " \
                   "the rest from the end"
        if self.mode == "sliding-window":
            return (f"sliding windows of {max_length} tokens sharing {self.stride}, at most {self.max_windows} per "
                    f"text, {self.window_pooling} of the window logits per text")
        return f"truncated at {max_length} tokens"


def check_long_text_settings(config: Any) -> None:
    """Check the long-text settings of a ``TrainConfig`` and fill in the defaults of its mode (in place)."""
    if config.long_text == "sliding-window":
        config.stride = default_stride(config.max_length) if config.stride is None else config.stride
        config.window_pooling = config.window_pooling or WINDOW_POOLINGS[0]
        config.max_windows = DEFAULT_MAX_WINDOWS if config.max_windows is None else config.max_windows
    if config.long_text == "head-tail" and config.head_fraction is None:
        config.head_fraction = DEFAULT_HEAD_FRACTION
    LongText.from_config(config).checked(config.max_length)
    if config.long_text != "truncate" and config.text_pair_column is not None:
        raise UserInputError(
            f"--long-text {config.long_text} reads single texts, but --text-pair-column {config.text_pair_column!r} "
            "gives pairs; drop --text-pair-column or use --long-text truncate (pairs are cut at --max-length).")


def record_long_text(model_config: Any, long_text: LongText) -> None:
    """Write the settings into a model's config (``config.json``) unless they are plain truncation."""
    if long_text.mode != "truncate":
        setattr(model_config, MODEL_CONFIG_KEY, long_text.to_dict())


def card_context(config: Mapping[str, Any], summary: Mapping[str, Any], problem_type: Optional[str]) -> dict[str, Any]:
    """Template variables of the card's long-text section (``model_cards/long_text.md``) and limitation line.

    Args:
        config: the model's ``training_config.json``.
        summary: its ``training_summary.json`` (``long_text``: windows per split, head/tail tokens).
        problem_type: the model's ``problem_type`` (how the card's code turns pooled logits into scores).
    """
    mode = config.get("long_text") or "truncate"
    record = summary.get("long_text") or {}
    train = (record.get("splits") or {}).get("train") or {}
    capped = train["capped_texts"] / train["texts"] if train.get("texts") else None
    unread = summary.get("truncated_fraction") or 0.0
    share = f" ({100 * unread:.1f}% of the training texts were longer)" if unread > 0 else ""
    limitation = {
        "truncate": f"Texts are cut at {config['max_length']} tokens{share}; anything past that is not read.",
        "head-tail": f"Of a text longer than {config['max_length']} tokens only the head and the tail are read (see "
                     "Long texts); what its middle says is not.",
        "sliding-window": f"Only the first {config.get('max_windows')} windows of a text are read; the rest of a "
                          "longer text is not. A text's score pools its windows, so a short passage that decides the "
                          "label can be outvoted by the rest of a long text.",
    }[mode]
    return {"long_text": mode, "stride": config.get("stride"), "window_pooling": config.get("window_pooling"),
            "max_windows": config.get("max_windows"), "head_fraction": config.get("head_fraction"),
            "capped_share": capped, "problem_type": problem_type or "single_label_classification",
            **{key: record.get(key) for key in ("head_tokens", "tail_tokens", "special_tokens_before",
                                                "special_tokens_after")},
            "long_text_limitation": limitation}
