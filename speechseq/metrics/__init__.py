"""WER and CER as an `evaluate` metric module shipped with the package and loaded by path: `evaluate.load("wer")`
fetches its script from the hub, which is out of reach here."""

from pathlib import Path

import evaluate

__all__ = ["load_metric"]


def load_metric(name: str) -> evaluate.EvaluationModule:
    """`"wer"` or `"cer"`, as an `evaluate` module."""
    if name not in ("wer", "cer"):
        raise ValueError(f"unknown metric {name!r}; speechseq ships 'wer' and 'cer'")
    return evaluate.load(str(Path(__file__).parent / "error_rate"), name)
