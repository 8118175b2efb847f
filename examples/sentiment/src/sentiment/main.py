"""Classify the sentences given on the command line (or a few samples) as positive/negative."""

from __future__ import annotations

import sys

from sentiment.model import classify, train

SAMPLES = ("I love it, great work", "Awful quality, I hate it")


def main() -> None:
    texts = sys.argv[1:] or list(SAMPLES)
    pipeline = train()
    for text, label in zip(texts, classify(pipeline, texts)):
        print(f"{label}\t{text}")


if __name__ == "__main__":
    main()
