"""Word error rate as an `evaluate` metric module, loaded by path (the hub is out of reach): jiwer underneath."""

import datasets
import evaluate
import jiwer

_DESCRIPTION = "Word error rate: (substitutions + deletions + insertions) / reference words, over the corpus."
_KWARGS = """
Args:
    predictions (`list[str]`): hypotheses.
    references (`list[str]`): references, one per hypothesis.
Returns:
    `float`: the corpus word error rate (0 is perfect; can exceed 1).
"""


class WER(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references):
        return jiwer.wer(references, predictions)
