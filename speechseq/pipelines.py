"""transformers' ASR pipeline, reading and resampling audio for speechseq models without ffmpeg or torchaudio, and
giving word or character timestamps from the CTC head."""

import logging

import torch
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.pipelines.automatic_speech_recognition import AutomaticSpeechRecognitionPipeline

from .audio import load_audio, resample, to_mono_float32
from .generation_speechseq import timestamp_chunks
from .ngram_lm import word_pieces

logger = logging.getLogger(__name__)

__all__ = ["SpeechSeqASRPipeline", "register_pipeline"]


class SpeechSeqASRPipeline(AutomaticSpeechRecognitionPipeline):
    """`pipeline("automatic-speech-recognition")` as transformers has it, except that for speechseq models file
    paths and bytes are decoded with soundfile (wav, flac, ogg, mp3) and `{"raw"/"array", "sampling_rate"}` dicts
    at any rate are resampled with soxr. transformers' own reader needs the ffmpeg binary and its resampler needs
    torchaudio. Other models go through transformers' code untouched.

    `return_timestamps="word"` (or `True`) or `"char"` gives transformers' `chunks` (`[{"text", "timestamp": (start,
    end)}]`, seconds), which transformers refuses for seq2seq models other than Whisper: speechseq aligns the
    transcript the decoding produced with its CTC head's log-probabilities (`model.align`, a Viterbi forced
    alignment), so the times come from the audio whatever decoded the words."""

    def _sanitize_parameters(self, return_timestamps=None, **kwargs):
        if self.model.config.model_type != "speechseq" or not return_timestamps:
            return super()._sanitize_parameters(return_timestamps=return_timestamps, **kwargs)
        level = "word" if return_timestamps is True else return_timestamps
        if level not in ("word", "char"):
            raise ValueError(f"return_timestamps must be 'word', 'char' or True for speechseq models, got {level!r}")
        if kwargs.get("chunk_length_s"):
            raise ValueError("return_timestamps with chunk_length_s is not supported yet for speechseq models")
        preprocess, forward, postprocess = super()._sanitize_parameters(**kwargs)
        forward["timestamp_level"] = postprocess["timestamp_level"] = level
        return preprocess, forward, postprocess

    def _forward(self, model_inputs, timestamp_level=None, **generate_kwargs):
        if self.model.config.model_type == "speechseq" and self.model.config.input_mode == "fbank":
            # long recordings are decoded in segments, each normalised as the extractor normalises an utterance
            generate_kwargs.setdefault("segment_normalization", self.feature_extractor.normalization)
        if timestamp_level is None:
            return super()._forward(model_inputs, **generate_kwargs)
        features, mask = model_inputs["input_features"], model_inputs.get("attention_mask")
        out = super()._forward(model_inputs, **generate_kwargs)
        try:
            spans = self.model.align(features, out["tokens"], mask)
        except ValueError as error:  # a transcript the CTC head cannot align (longer than the audio allows)
            logger.warning("no timestamps for this input: %s", error)
            spans = [[] for _ in range(len(out["tokens"]))]
        width = max(1, max(map(len, spans)))
        # as a tensor, so that the pipeline splits a batch into its items as it splits the tokens
        padded = [[*row, *[(-1, -1, -1)] * (width - len(row))] for row in spans]
        out["token_spans"] = torch.tensor(padded).view(-1, width, 3)
        return out

    def postprocess(self, model_outputs, timestamp_level=None, **kwargs):
        if timestamp_level is None:
            return super().postprocess(model_outputs, **kwargs)
        spans = [tuple(span) for output in model_outputs for span in output.pop("token_spans").view(-1, 3).tolist()
                 if span[0] >= 0]  # fmt: skip
        result = super().postprocess(model_outputs, **kwargs)
        result["chunks"] = timestamp_chunks(spans, word_pieces(self.tokenizer), self.model.frame_seconds, timestamp_level)
        return result

    def preprocess(self, inputs, chunk_length_s=0, stride_length_s=None):
        if self.model.config.model_type == "speechseq":
            inputs = self._read(inputs)
        yield from super().preprocess(inputs, chunk_length_s=chunk_length_s, stride_length_s=stride_length_s)

    def _read(self, inputs):
        sampling_rate = self.feature_extractor.sampling_rate
        if isinstance(inputs, str) and not inputs.startswith(("http://", "https://")):
            return load_audio(inputs, sampling_rate)
        if isinstance(inputs, (bytes, bytearray)):
            return load_audio(inputs, sampling_rate)
        if isinstance(inputs, dict) and inputs.get("sampling_rate", sampling_rate) != sampling_rate:
            inputs = dict(inputs)
            audio = inputs.pop("raw") if "raw" in inputs else inputs.pop("array")
            audio = to_mono_float32(audio, where="pipeline input")
            inputs["raw"] = resample(audio, inputs.pop("sampling_rate"), sampling_rate)
            inputs["sampling_rate"] = sampling_rate
        return inputs


def register_pipeline():
    """Make `pipeline("automatic-speech-recognition")` build a [`SpeechSeqASRPipeline`] (for every model; it
    behaves as transformers' own for models other than speechseq)."""
    PIPELINE_REGISTRY.supported_tasks["automatic-speech-recognition"]["impl"] = SpeechSeqASRPipeline
