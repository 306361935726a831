"""The model card template, shipped inside the package as ``nlp_transfer.model_cards``."""
