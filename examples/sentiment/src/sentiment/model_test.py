from sentiment.model import classify, train


def test_classifies_obvious_sentences() -> None:
    pipeline = train()
    assert classify(pipeline, ["I love this, great", "awful, I hate it"]) == [
        "positive",
        "negative",
    ]
