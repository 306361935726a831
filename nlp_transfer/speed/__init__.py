"""Speed options: changes to how training runs that leave what it learns the same.

Each option is a :class:`SpeedOption` named after the :class:`~nlp_transfer.config.TrainConfig`
switch that turns it on. It says when it applies (:meth:`SpeedOption.skip_reason`: device, number
of processes, strategy, whether the objective reads every position), is applied through the hooks
the training set-up calls in order (model → optimizer parameter groups → optimizer → the fit loop)
and undone in :meth:`SpeedOption.undo`. :class:`SpeedOptions` runs them all and reports them in
``training_summary.json`` in one shape: ``speedups[name]`` is ``None`` when the option did not run
(``speedups_skipped[name]`` says why) and otherwise ``{"effect": sentence, ...details}``.

The options themselves live in this package's modules: :mod:`.dropout`, :mod:`.last_layer`,
:mod:`.embedding_rows` and :mod:`.allocator`.
"""

from .base import SpeedContext, SpeedOption, SpeedOptions

__all__ = ["SPEED_OPTION_NAMES", "SpeedContext", "SpeedOption", "SpeedOptions", "default_options"]


def default_options() -> list[SpeedOption]:
    """Every speed option, in the order they are applied."""
    from .options import ClsOnlyLastLayer, CompactEmbeddings, FastCpuDropout, ReuseFreedMemory

    return [FastCpuDropout(), ClsOnlyLastLayer(), CompactEmbeddings(), ReuseFreedMemory()]


SPEED_OPTION_NAMES = ("fast_cpu_dropout", "cls_only_last_layer", "compact_embeddings", "reuse_freed_memory")
