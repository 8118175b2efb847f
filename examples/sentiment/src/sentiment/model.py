"""A tiny sentiment classifier: TF-IDF features + logistic regression (scikit-learn).

Trained at start-up on the bundled examples, so the app needs no model download.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

TRAINING_DATA: Sequence[Tuple[str, str]] = (
    ("I love this product, it works great", "positive"),
    ("Absolutely fantastic experience, highly recommended", "positive"),
    ("What a wonderful and delightful surprise", "positive"),
    ("The service was excellent and the staff friendly", "positive"),
    ("Great value, I am very happy with it", "positive"),
    ("This is the best purchase I have made", "positive"),
    ("Terrible quality, it broke after one day", "negative"),
    ("I hate it, a complete waste of money", "negative"),
    ("Awful experience, the staff was rude", "negative"),
    ("Very disappointing and poorly made", "negative"),
    ("The worst service I have ever had", "negative"),
    ("It does not work, I want a refund", "negative"),
)


def train() -> Pipeline:
    texts = [text for text, _ in TRAINING_DATA]
    labels = [label for _, label in TRAINING_DATA]
    pipeline = Pipeline(
        [
            ("tfidf", TfidfVectorizer(ngram_range=(1, 2))),
            ("clf", LogisticRegression(random_state=0)),
        ]
    )
    pipeline.fit(texts, labels)
    return pipeline


def classify(pipeline: Pipeline, texts: Sequence[str]) -> List[str]:
    return [str(label) for label in pipeline.predict(list(texts))]
