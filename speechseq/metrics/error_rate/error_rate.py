"""Word and character error rates as one `evaluate` metric module, loaded by path (the hub is out of reach):
`evaluate.load(<this folder>, "wer")` or `(..., "cer")`; jiwer computes them."""

import datasets
import evaluate
import jiwer

_DESCRIPTION = """Error rate over the corpus: (substitutions + deletions + insertions) / reference length, counted in
words ("wer") or characters ("cer")."""
_KWARGS = """
Args:
    predictions (`list[str]`): hypotheses.
    references (`list[str]`): references, one per hypothesis.
Returns:
    `float`: the corpus error rate (0 is perfect; insertions can take it above 1).
"""
_MEASURES = {"wer": jiwer.wer, "cer": jiwer.cer}


class ErrorRate(evaluate.Metric):
    def _info(self):
        if self.config_name not in _MEASURES:
            raise ValueError(f"choose 'wer' or 'cer' as the configuration, not {self.config_name!r}")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references):
        return _MEASURES[self.config_name](references, predictions)
