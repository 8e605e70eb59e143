"""The speechseq processor: the feature extractor and the tokenizer, saved and loaded as one directory."""

import numpy as np
from transformers import BatchFeature, ProcessorMixin

from .tokenization_speechseq import normalize_text

__all__ = ["SpeechSeqProcessor"]

TEXT_NORMALIZATIONS = ("speechseq", "none")


class SpeechSeqProcessor(ProcessorMixin):
    r"""
    Pairs a [`SpeechSeqFeatureExtractor`] with a tokenizer: audio (or precomputed filterbanks) become
    `input_features` and `attention_mask`, transcripts become `labels` padded with -100.

    Args:
        feature_extractor ([`SpeechSeqFeatureExtractor`]).
        tokenizer ([`PreTrainedTokenizerFast`]): from [`train_tokenizer`] or [`load_tokenizer`].
        text_normalization (`str`, defaults to `"speechseq"`): `"speechseq"` runs [`normalize_text`] on every
            transcript before tokenizing (and in [`~SpeechSeqProcessor.normalize`], for metric references);
            `"none"` leaves text as given, for a tokenizer whose vocabulary expects another form (say, upper case).

    Example:

    ```python
    >>> import numpy as np
    >>> from speechseq import SpeechSeqFeatureExtractor, SpeechSeqProcessor, train_tokenizer
    >>> processor = SpeechSeqProcessor(SpeechSeqFeatureExtractor(), train_tokenizer(["hello world"]))
    >>> batch = processor(audio=[np.zeros(16000), np.zeros(9000)], sampling_rate=16000, text=["Hello", "World!"],
    ...                   return_tensors="pt")
    >>> sorted(batch.keys()), batch["labels"][1].tolist()
    (['attention_mask', 'input_features', 'labels'], [14, 13, 10, 8, 5, 4])
    ```
    """

    def __init__(self, feature_extractor, tokenizer, text_normalization="speechseq"):
        if text_normalization not in TEXT_NORMALIZATIONS:
            raise ValueError(f"text_normalization must be one of {TEXT_NORMALIZATIONS}, got {text_normalization!r}")
        self.text_normalization = text_normalization
        super().__init__(feature_extractor, tokenizer)

    def normalize(self, text: str) -> str:
        """`text` as this processor tokenizes it: the form to score hypotheses and references in."""
        return normalize_text(text) if self.text_normalization == "speechseq" else text

    def __call__(self, audio=None, sampling_rate=None, text=None, *, input_features=None, return_tensors=None, **kwargs):
        """
        Args:
            audio: waveforms, as [`SpeechSeqFeatureExtractor.__call__`] takes them.
            sampling_rate (`int`, *optional*): the rate of `audio`.
            text (`str` or `list[str]`, *optional*): transcripts, one per utterance.
            input_features: precomputed `(feature_size, frames)` filterbanks, instead of `audio`.
            return_tensors (`str`, *optional*): `"pt"` or `"np"`.

        Returns:
            [`BatchFeature`] with `input_features` and `attention_mask` for audio, and `labels` (ids ending in
            `[EOS]`, padded with -100) for text. Text alone gives the tokenizer's `input_ids` and `attention_mask`.
        """
        if audio is None and input_features is None and text is None:
            raise ValueError("give audio, input_features or text to process")
        texts = None if text is None else [self.normalize(t) for t in ([text] if isinstance(text, str) else text)]
        if audio is None and input_features is None:
            texts = texts[0] if isinstance(text, str) else texts
            return self.tokenizer(texts, padding=return_tensors is not None, return_tensors=return_tensors)
        inputs = self.feature_extractor(
            audio, sampling_rate=sampling_rate, input_features=input_features, return_tensors=return_tensors, **kwargs
        )
        if texts is None:
            return inputs
        if len(texts) != len(inputs["input_features"]):
            raise ValueError(f"got {len(inputs['input_features'])} utterances but {len(texts)} transcripts")
        encodings = self.tokenizer(texts, padding=True, return_tensors="np")
        labels = np.where(encodings["attention_mask"] == 1, encodings["input_ids"], -100)
        inputs["labels"] = labels if return_tensors else [row[row != -100].tolist() for row in labels]
        return BatchFeature(dict(inputs), tensor_type=return_tensors)

    def batch_decode(self, *args, **kwargs):
        """The tokenizer's `batch_decode`; pass `skip_special_tokens=True` for plain transcripts."""
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        """The tokenizer's `decode`."""
        return self.tokenizer.decode(*args, **kwargs)
