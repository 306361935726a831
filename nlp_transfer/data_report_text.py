"""The data report in words: the sentences for its findings and the table ``inspect`` prints.

:func:`findings` turns the counts of a :class:`~nlp_transfer.data_report.DataReport` into
``error``/``warning`` sentences that name the file, the rows and the fix; :func:`render` lays the
whole report out as a table a person takes in at a glance; :func:`summary_lines` is the short
version ``train`` logs before training.
"""

from __future__ import annotations

from typing import Any

IMBALANCE_WARNING = 10.0  # largest / smallest training class
TRUNCATION_WARNING = 0.05  # share of training texts cut at --max-length
LABELS_SHOWN = 30  # label rows in the table; --json lists all
ROLES = {"train": "training", "validation": "validation", "test": "test"}
_ODDITY_WORDS = {"control_characters": "control characters (U+0080-U+009F ones are usually Windows-1252 "
                                        "punctuation such as ’ read as latin-1)", "replacement_characters":
                 "U+FFFD replacement characters (bytes lost when the file was decoded)",
                 "mojibake": "mojibake (UTF-8 read as latin-1/cp1252, e.g. 'Ã©' for 'é')"}


def _rows(finding: dict[str, Any]) -> str:
    shown = ", ".join(str(r) for r in finding["examples"])
    more = f" and {finding['rows'] - len(finding['examples'])} more" if finding["rows"] > len(finding["examples"]) else ""
    return f"data rows {shown}{more}"


def findings(report: Any) -> tuple[list[str], list[str]]:
    """Errors (what ``train`` refuses) and warnings (what it trains through), as sentences."""
    errors: list[str] = []
    warnings: list[str] = []
    label, text = report.columns["label"], report.columns["text"]
    for split, stats in report.splits.items():
        where = f"{ROLES[split]} file {report.files[split]!r}"
        if stats["blank_texts"]["rows"]:  # the sentence data.check_texts writes, so train says it one way
            named = " or ".join(repr(c) for c in (text, report.columns["text_pair"]) if c)
            errors.append(f"{where}: column {named} is empty in {stats['blank_texts']['rows']} row(s) "
                          f"({_rows(stats['blank_texts'])}); drop or fill those rows.")
        if stats["empty_labels"]["rows"]:
            errors.append(f"{where}: label column {label!r} is empty in {stats['empty_labels']['rows']} row(s) "
                          f"({_rows(stats['empty_labels'])}); every row needs a label — drop or fill those rows.")
        warnings += _split_warnings(where, stats)
    if len(report.labels) == 1:
        errors.append(f"training file {report.files['train']!r} has only one label ({report.labels[0]!r}) in column "
                      f"{label!r}; a classifier needs at least two classes.")
    for split, unseen in report.unseen_labels.items():
        named = ", ".join(f"{name!r} ({n} rows)" for name, n in list(unseen.items())[:5])
        errors.append(f"{ROLES[split]} file {report.files[split]!r} has label(s) never seen in training: {named}; "
                      "the model could never predict them. Remove those rows or add examples of them to the training data.")
    for split, leak in report.leakage.items():
        if leak["rows"]:
            example = leak["examples"][0]
            warnings.append(
                f"{leak['rows']} row(s) ({leak['share']:.1%}) of the {ROLES[split]} file also occur in the training "
                f"file (same {text!r} after case/whitespace normalisation; e.g. {ROLES[split]} row {example['row']} = "
                f"training row {example['train_row']}): the {split} score overstates the model on new text. Remove "
                "them from one of the files.")
    warnings += _label_and_length_warnings(report)
    return errors, warnings


def _split_warnings(where: str, stats: dict[str, Any]) -> list[str]:
    warnings = []
    if stats["duplicate_rows"]:
        rows = " and ".join(map(str, stats["duplicate_examples"][0]["rows"][:2]))
        warnings.append(f"{where}: {stats['duplicate_rows']} row(s) repeat the text of an earlier row (case and "
                        f"whitespace ignored; e.g. data rows {rows}); duplicates weigh those texts more — drop them "
                        "unless that is intended.")
    if stats["conflicting_texts"]:
        example = stats["conflict_examples"][0]
        warnings.append(f"{where}: {stats['conflicting_texts']} text(s) appear with different labels "
                        f"({stats['conflicting_rows']} rows), e.g. {example['text']!r} labelled "
                        f"{' and '.join(map(repr, example['labels']))} (data rows "
                        f"{', '.join(map(str, example['rows']))}); fix the labels or drop those rows.")
    for key, words in _ODDITY_WORDS.items():
        if stats[key]["rows"]:
            warnings.append(f"{where}: {stats[key]['rows']} row(s) contain {words} ({_rows(stats[key])}); check how "
                            "the file was exported.")
    return warnings


def _label_and_length_warnings(report: Any) -> list[str]:
    warnings = []
    counts = report.splits["train"]["label_counts"]
    if report.imbalance_ratio is not None and report.imbalance_ratio >= IMBALANCE_WARNING and len(report.labels) > 1:
        smallest = min(report.labels, key=lambda name: counts[name])
        warnings.append(f"the training labels are imbalanced: the largest class has {report.imbalance_ratio:.1f}× the "
                        f"rows of the smallest ({smallest!r}, {counts[smallest]} rows); judge the model by macro F1, "
                        "not accuracy, and consider class weighting or more examples of the rare classes.")
    tokens = report.tokens
    if tokens is not None:
        share = tokens["splits"]["train"]["truncated_share"]
        if share > TRUNCATION_WARNING:
            warnings.append(f"{share:.0%} of training texts are longer than --max-length {tokens['max_length']} "
                            f"tokens and will be cut; --max-length {tokens['suggested_max_length']} keeps "
                            f"{tokens['suggested_covers']:.0%} of them whole.")
    return warnings


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    """Columns padded to their widest cell: the first left-aligned, the others right-aligned."""
    cells = [[str(c) for c in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for row in cells:
        parts = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        lines.append("  " + "  ".join(parts).rstrip())
    return lines


def _share(n: int, total: int) -> str:
    return f"{n} ({n / total:.1%})" if total else str(n)


def render(report: Any) -> str:
    """The whole report as plain text: files, labels, text checks, lengths, then the findings."""
    splits = list(report.splits)
    lines = [f"Data report ({report.seconds:.1f} s)"]
    lines += [f"  {s:<10} {report.splits[s]['rows']:>8} rows  {report.files[s]}" for s in splits] + [""]
    lines += _label_lines(report, splits)
    checks = [
        ("empty texts", lambda s: report.splits[s]["empty_texts"]["rows"]),
        ("whitespace-only texts", lambda s: report.splits[s]["whitespace_only_texts"]["rows"]),
        ("empty labels", lambda s: report.splits[s]["empty_labels"]["rows"]),
        ("duplicate rows", lambda s: report.splits[s]["duplicate_rows"]),
        ("texts with conflicting labels", lambda s: report.splits[s]["conflicting_texts"]),
        ("also in training (leak)", lambda s: report.leakage[s]["rows"] if s in report.leakage else "-"),
        ("labels unseen in training", lambda s: sum(report.unseen_labels.get(s, {}).values()) if s != "train" else "-"),
        ("control characters", lambda s: report.splits[s]["control_characters"]["rows"]),
        ("replacement characters", lambda s: report.splits[s]["replacement_characters"]["rows"]),
        ("mojibake", lambda s: report.splits[s]["mojibake"]["rows"]),
    ]
    lines += ["Texts (rows)"] + _table(["check", *splits], [[name, *(get(s) for s in splits)] for name, get in checks])
    lines.append("")
    if report.tokens is not None:
        lines += _token_lines(report.tokens, splits)
    lines += [f"error: {e}" for e in report.errors] + [f"warning: {w}" for w in report.warnings]
    if not report.errors and not report.warnings:
        lines.append("No problems found.")
    return "\n".join(lines)


def _label_lines(report: Any, splits: list[str]) -> list[str]:
    names = list(report.splits["train"]["label_counts"])
    for split in splits:  # labels only validation/test have go last
        names += [n for n in report.splits[split]["label_counts"] if n not in names]
    rows = [[name, *(_share(report.splits[s]["label_counts"].get(name, 0), report.splits[s]["rows"]) for s in splits),
             f"{report.balanced_weights[name]:.3g}" if name in report.balanced_weights else "-"]
            for name in names[:LABELS_SHOWN]]
    lines = [f"Labels ({len(report.labels)} in training)"] + _table(["label", *splits, "balanced weight"], rows)
    if len(names) > LABELS_SHOWN:
        lines.append(f"  … and {len(names) - LABELS_SHOWN} more labels (--json lists them all)")
    if report.imbalance_ratio is not None:
        lines.append(f"  imbalance ratio (largest / smallest training class): {report.imbalance_ratio:.2f}")
    return lines + [""]


def _token_lines(tokens: dict[str, Any], splits: list[str]) -> list[str]:
    name = f" with {tokens['tokenizer']}" if tokens.get("tokenizer") else ""
    rows = [[s, t["min"], f"{t['median']:g}", t["p95"], t["max"], _share(t["truncated"], t["texts"])] for s, t in tokens["splits"].items()]
    return ([f"Token lengths{name} (special tokens included)"]
            + _table(["split", "min", "median", "p95", "max", f"cut at {tokens['max_length']}"], rows)
            + [f"  suggested --max-length: {tokens['suggested_max_length']} (keeps {tokens['suggested_covers']:.1%} "
               f"of training texts whole; the model accepts up to {tokens['model_limit']})", ""])


def summary_lines(report: Any) -> list[str]:
    """The few lines ``train`` logs: sizes and labels, then every warning."""
    sizes = ", ".join(f"{s} {stats['rows']} rows" for s, stats in report.splits.items())
    ratio = f", imbalance ratio {report.imbalance_ratio:.1f}" if report.imbalance_ratio else ""
    return [f"data: {sizes}; {len(report.labels)} labels{ratio} (checked in {report.seconds:.1f} s; "
            "`nlp-transfer inspect` shows the full report)"] + report.warnings
