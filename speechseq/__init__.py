"""speechseq: pre-norm Transformer encoder-decoder ASR with a CTC head, speaking the Hugging Face API.

Importing the package registers its classes with the Auto classes and the ASR pipeline.
"""

from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModelForSpeechSeq2Seq,
    AutoProcessor,
)

from .audio import load_audio
from .configuration_speechseq import PRESETS, SpeechSeqConfig
from .feature_extraction_speechseq import SpeechSeqFeatureExtractor
from .modeling_speechseq import SpeechSeqForConditionalGeneration, SpeechSeqModel, SpeechSeqPreTrainedModel
from .pipelines import SpeechSeqASRPipeline, register_pipeline
from .processing_speechseq import SpeechSeqProcessor
from .tokenization_speechseq import (
    SPECIAL_TOKENS,
    load_tokenizer,
    normalize_text,
    special_token_ids,
    train_tokenizer,
)

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "SPECIAL_TOKENS",
    "SpeechSeqASRPipeline",
    "SpeechSeqConfig",
    "SpeechSeqFeatureExtractor",
    "SpeechSeqForConditionalGeneration",
    "SpeechSeqModel",
    "SpeechSeqPreTrainedModel",
    "SpeechSeqProcessor",
    "load_audio",
    "load_tokenizer",
    "normalize_text",
    "special_token_ids",
    "train_tokenizer",
]

AutoConfig.register(SpeechSeqConfig.model_type, SpeechSeqConfig, exist_ok=True)
AutoModelForSpeechSeq2Seq.register(SpeechSeqConfig, SpeechSeqForConditionalGeneration, exist_ok=True)
AutoFeatureExtractor.register(SpeechSeqConfig, SpeechSeqFeatureExtractor, exist_ok=True)
AutoProcessor.register(SpeechSeqConfig, SpeechSeqProcessor, exist_ok=True)
register_pipeline()

# save_pretrained then writes `auto_map` and copies the code, so a process without speechseq installed loads the
# model and processor with trust_remote_code=True.
SpeechSeqConfig.register_for_auto_class()
SpeechSeqForConditionalGeneration.register_for_auto_class("AutoModelForSpeechSeq2Seq")
SpeechSeqFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")
SpeechSeqProcessor.register_for_auto_class("AutoProcessor")
