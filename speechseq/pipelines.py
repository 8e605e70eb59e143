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
    alignment), so the times come from the audio whatever decoded the words; long recordings segment by segment.

    Long recordings need no setting: `generate()` cuts them at pauses into segments (`segment_seconds`, 10 s by
    default). transformers' `chunk_length_s` cuts the audio blindly into overlapping chunks, whose transcripts it
    can only glue overlap and all for a seq2seq model; for speechseq models it sets the segments' longest length
    instead, and `stride_length_s` is not needed (segments meet in pauses, not in words)."""

    def _sanitize_parameters(self, return_timestamps=None, chunk_length_s=None, stride_length_s=None, **kwargs):
        if self.model.config.model_type != "speechseq":
            return super()._sanitize_parameters(return_timestamps=return_timestamps, chunk_length_s=chunk_length_s,
                                                stride_length_s=stride_length_s, **kwargs)  # fmt: skip
        level = "word" if return_timestamps is True else return_timestamps or None
        if level not in (None, "word", "char"):
            raise ValueError(f"return_timestamps must be 'word', 'char' or True for speechseq models, got {level!r}")
        if chunk_length_s is not None and chunk_length_s <= 0:
            raise ValueError(f"chunk_length_s must be positive, got {chunk_length_s!r}")
        if stride_length_s is not None:
            logger.info("stride_length_s is not used for speechseq models: segments are cut in pauses, not overlapped")
        preprocess, forward, postprocess = super()._sanitize_parameters(**kwargs)
        if chunk_length_s:
            forward["segment_seconds"] = chunk_length_s
        if level is not None:
            forward["timestamp_level"] = postprocess["timestamp_level"] = level
        return preprocess, forward, postprocess

    def _forward(self, model_inputs, timestamp_level=None, **generate_kwargs):
        if self.model.config.model_type != "speechseq":
            return super()._forward(model_inputs, **generate_kwargs)
        if self.model.config.input_mode == "fbank":
            # long recordings are decoded in segments, each normalised as the extractor normalises an utterance
            generate_kwargs.setdefault("segment_normalization", self.feature_extractor.normalization)
        if timestamp_level is None:
            return super()._forward(model_inputs, **generate_kwargs)
        # transformers' seq2seq path, with generate() asked for the CTC alignment of what it decoded
        is_last, mask = model_inputs.pop("is_last"), model_inputs.pop("attention_mask", None)
        features = model_inputs.pop("input_features")
        generate_kwargs = self._prepare_generate_kwargs(generate_kwargs)
        output = self.model.generate(features, attention_mask=mask, return_token_spans=True, **generate_kwargs)
        sequences, spans = output.sequences, output.token_spans
        width = max(1, max(map(len, spans)))
        # as a tensor, so that the pipeline splits a batch into its items as it splits the tokens
        padded = [[*row, *[(-1, -1, -1)] * (width - len(row))] for row in spans]
        return {"is_last": is_last, "tokens": sequences, "token_spans": torch.tensor(padded).view(-1, width, 3),
                **model_inputs}  # fmt: skip

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
