"""Predict with a trained model from Python: python scripts/predict.py runs/my-model "great film" "awful plot".

With --csv FILE the texts come from the model's text column of a CSV instead (top 3 labels shown).
"""

import argparse
import csv
import json

from nlp_transfer import load_classifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="Folder written by nlp-transfer train, or a Hub repo id.")
    parser.add_argument("texts", nargs="*", help="Texts to classify.")
    parser.add_argument("--csv", help="Read the texts from this CSV instead.")
    args = parser.parse_args()

    clf = load_classifier(args.model)  # applies the training max_length and columns
    texts = args.texts
    if args.csv:
        with open(args.csv, encoding="utf-8", newline="") as fh:
            texts = [row[clf.text_column] for row in csv.DictReader(fh)]

    for text, top in zip(texts, clf.predict(texts, top_k=3)):  # best label first
        print(json.dumps({"text": text[:80], "label": top[0]["label"], "score": round(top[0]["score"], 4),
                          "top_3": [(d["label"], round(d["score"], 4)) for d in top]}))
    print("labels, in predict_proba column order:", clf.labels)


if __name__ == "__main__":
    main()
