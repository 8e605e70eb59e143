"""Character error rate as an `evaluate` metric module, loaded by path (the hub is out of reach): jiwer underneath."""

import datasets
import evaluate
import jiwer

_DESCRIPTION = "Character error rate: (substitutions + deletions + insertions) / reference characters, over the corpus."
_KWARGS = """
Args:
    predictions (`list[str]`): hypotheses.
    references (`list[str]`): references, one per hypothesis.
Returns:
    `float`: the corpus character error rate (0 is perfect; can exceed 1).
"""


class CER(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references):
        return jiwer.cer(references, predictions)
