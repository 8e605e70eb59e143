"""transformers' ASR pipeline, reading and resampling audio for speechseq models without ffmpeg or torchaudio."""

from transformers.pipelines import PIPELINE_REGISTRY
from transformers.pipelines.automatic_speech_recognition import AutomaticSpeechRecognitionPipeline

from .audio import load_audio, resample, to_mono_float32

__all__ = ["SpeechSeqASRPipeline", "register_pipeline"]


class SpeechSeqASRPipeline(AutomaticSpeechRecognitionPipeline):
    """`pipeline("automatic-speech-recognition")` as transformers has it, except that for speechseq models file
    paths and bytes are decoded with soundfile (wav, flac, ogg, mp3) and `{"raw"/"array", "sampling_rate"}` dicts
    at any rate are resampled with soxr. transformers' own reader needs the ffmpeg binary and its resampler needs
    torchaudio. Other models go through transformers' code untouched."""

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
