"""WER and CER as `evaluate` metric modules shipped with the package, loaded by path: `evaluate.load("wer")`
fetches its script from the hub, which is out of reach here."""

from pathlib import Path

import evaluate

__all__ = ["load_metric"]


def load_metric(name: str) -> evaluate.EvaluationModule:
    """`"wer"` or `"cer"`, as `evaluate` modules."""
    path = Path(__file__).parent / name
    if not (path / f"{name}.py").exists():
        raise ValueError(f"unknown metric {name!r}; speechseq ships 'wer' and 'cer'")
    return evaluate.load(str(path))
