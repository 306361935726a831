"""nlp-transfer: transfer learning on text with BERT-family encoders.

Fine-tune on a CSV, evaluate, write a standard Hugging Face model folder with a model card::

    from nlp_transfer import TrainConfig, train
    result = train(TrainConfig(train_file="train.csv", test_file="test.csv", output_dir="runs/my-model"))
"""

from .config import DEFAULT_MODEL, TrainConfig  # noqa: E402
from .version import __version__  # noqa: E402
from .errors import UserInputError  # noqa: E402
from .evaluation import evaluate_model  # noqa: E402
from .hub import PushError, PushResult, push_to_hub  # noqa: E402
from .inference import Classifier, load_classifier  # noqa: E402
from .trainer import TrainResult, train  # noqa: E402

__all__ = ["Classifier", "DEFAULT_MODEL", "TrainConfig", "TrainResult", "UserInputError", "evaluate_model", "load_classifier", "train", "__version__",
           "PushError", "PushResult", "push_to_hub"]
