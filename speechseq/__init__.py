"""speechseq: pre-norm Transformer encoder-decoder ASR with a CTC head, speaking the Hugging Face API.

Importing the package registers its classes with the Auto classes and the ASR pipeline.
"""

from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSpeechSeq2Seq,
    AutoProcessor,
)

from .audio import load_audio
from .configuration_speechseq import LM_PRESETS, PRESETS, SpeechSeqConfig, SpeechSeqLMConfig
from .feature_extraction_speechseq import SpeechSeqFeatureExtractor
from .generation_speechseq import BeamSearchOptions, ctc_prefix_beam_search
from .modeling_speechseq import (
    SpeechSeqForCausalLM,
    SpeechSeqForConditionalGeneration,
    SpeechSeqGenerateOutput,
    SpeechSeqModel,
    SpeechSeqPreTrainedModel,
)
from .ngram_lm import WordLanguageModel, train_ngram_lm
from .pipelines import SpeechSeqASRPipeline, register_pipeline
from .processing_speechseq import SpeechSeqProcessor
from .whisper_conversion import convert_ctranslate2_whisper
from .tokenization_speechseq import (
    SPECIAL_TOKENS,
    load_tokenizer,
    normalize_text,
    special_token_ids,
    suppressed_token_ids,
    train_tokenizer,
)

__version__ = "0.1.0"

__all__ = [
    "BeamSearchOptions",
    "LM_PRESETS",
    "PRESETS",
    "SPECIAL_TOKENS",
    "SpeechSeqASRPipeline",
    "SpeechSeqConfig",
    "SpeechSeqFeatureExtractor",
    "SpeechSeqForCausalLM",
    "SpeechSeqForConditionalGeneration",
    "SpeechSeqGenerateOutput",
    "SpeechSeqLMConfig",
    "SpeechSeqModel",
    "SpeechSeqPreTrainedModel",
    "SpeechSeqProcessor",
    "WordLanguageModel",
    "convert_ctranslate2_whisper",
    "ctc_prefix_beam_search",
    "load_audio",
    "load_tokenizer",
    "normalize_text",
    "special_token_ids",
    "suppressed_token_ids",
    "train_ngram_lm",
    "train_tokenizer",
]

AutoConfig.register(SpeechSeqConfig.model_type, SpeechSeqConfig, exist_ok=True)
AutoModel.register(SpeechSeqConfig, SpeechSeqModel, exist_ok=True)
AutoModelForSpeechSeq2Seq.register(SpeechSeqConfig, SpeechSeqForConditionalGeneration, exist_ok=True)
AutoConfig.register(SpeechSeqLMConfig.model_type, SpeechSeqLMConfig, exist_ok=True)
AutoModelForCausalLM.register(SpeechSeqLMConfig, SpeechSeqForCausalLM, exist_ok=True)
AutoFeatureExtractor.register(SpeechSeqConfig, SpeechSeqFeatureExtractor, exist_ok=True)
AutoProcessor.register(SpeechSeqConfig, SpeechSeqProcessor, exist_ok=True)
register_pipeline()

# save_pretrained then writes `auto_map` and copies the code, so a process without speechseq installed loads the
# model and processor with trust_remote_code=True.
SpeechSeqConfig.register_for_auto_class()
SpeechSeqModel.register_for_auto_class("AutoModel")
SpeechSeqForConditionalGeneration.register_for_auto_class("AutoModelForSpeechSeq2Seq")
SpeechSeqLMConfig.register_for_auto_class()
SpeechSeqForCausalLM.register_for_auto_class("AutoModelForCausalLM")
SpeechSeqFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")
SpeechSeqProcessor.register_for_auto_class("AutoProcessor")
