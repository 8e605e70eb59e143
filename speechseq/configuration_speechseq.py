"""Configuration of the speechseq encoder-decoder ASR model."""

from transformers import PretrainedConfig

__all__ = ["SpeechSeqConfig", "SpeechSeqLMConfig", "PRESETS", "LM_PRESETS", "SAMPLES_PER_FRAME", "WHISPER_ENCODERS"]

# Waveform samples per filterbank frame: the feature extractor's 10 ms hop at 16 kHz. Waveform inputs reach the model
# as (frames, SAMPLES_PER_FRAME) blocks, so that they pad, mask and batch exactly as filterbank frames do.
SAMPLES_PER_FRAME = 160
INPUT_MODES = ("fbank", "waveform", "fusion")

# Kernel and stride (along time) of each convolution of the subsampling front end, by time-reduction factor, for
# both front ends ("conv2d" over time x frequency, "conv1d" over time). Strided convolutions without padding, as
# ESPnet's Conv2dSubsampling{,6,8}: an output frame only ever sees real input frames, so padding a batch never
# changes the frames that belong to an utterance.
SUBSAMPLING_CONVS = {
    2: ((3, 2),),
    4: ((3, 2), (3, 2)),
    6: ((3, 2), (5, 3)),
    8: ((3, 2), (3, 2), (3, 2)),
}

# transformers' WhisperConfig fields that shape a Whisper encoder (`SpeechSeqConfig.whisper_encoder`), and their values
# for the published checkpoints (the sizes OpenAI released; ".en" models share their multilingual twin's encoder shape)
WHISPER_ENCODER_FIELDS = ("d_model", "encoder_layers", "encoder_attention_heads", "encoder_ffn_dim", "num_mel_bins",
                          "max_source_positions")  # fmt: skip
WHISPER_ENCODERS = {
    name: dict(d_model=d, encoder_layers=layers, encoder_attention_heads=heads, encoder_ffn_dim=4 * d, num_mel_bins=80,
               max_source_positions=1500)
    for name, (d, layers, heads) in {"tiny": (384, 4, 6), "base": (512, 6, 8), "small": (768, 12, 12)}.items()
}  # fmt: skip

# Named shapes for `SpeechSeqConfig.from_preset`. "small" is ESPnet's LibriSpeech-100 Transformer (12 x 2048 encoder)
# with a slimmer decoder feed-forward, so that it stays under the assignment's 30M-parameter limit with every one of
# its vocabularies (characters, BPE 1k, 5k and 10k: 22.5M to 27.6M parameters), and a lighter conv front end.
_SMALL = dict(
    d_model=256,
    encoder_layers=12,
    decoder_layers=6,
    encoder_attention_heads=4,
    decoder_attention_heads=4,
    encoder_ffn_dim=2048,
    decoder_ffn_dim=1024,
    subsampling_channels=64,  # 256 made the front end cost as much as the 12 encoder layers on a CPU
    dropout=0.1,
)
PRESETS = {
    "tiny": dict(
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        subsampling_channels=32,
        dropout=0.0,
    ),
    "small": _SMALL,
    # ESPnet's LibriSpeech-100 Conformer shape (12 blocks, d 256, kernel 31, ffn 1024) with InterCTC at the middle
    # block and self-conditioning (Nozaki & Komatsu, 2021): 25.0M parameters with characters, 28.8M with BPE 5k
    # (over 30M from about 7k tokens: self-conditioning maps the vocabulary back to d_model).
    "small-conformer": {**_SMALL, "encoder_ffn_dim": 1024, "encoder_block": "conformer", "conv_kernel_size": 31,
                        "interctc_layers": [6], "interctc_weight": 0.3, "self_conditioning": True},
    # A pretrained Whisper tiny encoder (d 384, 7.6M parameters), a projection to d 256, two speechseq Transformer
    # layers and a decoder of two: at an equal budget as accurate as heads of the encoder's width, at half the step
    # (README, "A pretrained encoder"). Its weights come from `SpeechSeqForConditionalGeneration.from_whisper`.
    "whisper-tiny": dict(
        d_model=256, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
        encoder_ffn_dim=1024, decoder_ffn_dim=1024, dropout=0.1, encoder_type="whisper",
        whisper_encoder=WHISPER_ENCODERS["tiny"], max_source_positions=1500,
    ),  # fmt: skip
}

# Language models for `SpeechSeqLMConfig.from_preset`: the decoders of the ASR presets, standing alone.
LM_PRESETS = {
    "tiny": dict(d_model=64, decoder_layers=2, decoder_attention_heads=4, decoder_ffn_dim=128, dropout=0.0),
    "small": dict(d_model=256, decoder_layers=6, decoder_attention_heads=4, decoder_ffn_dim=1024, dropout=0.1),
}

_ACTIVATIONS = ("relu", "gelu", "silu", "swish", "gelu_new")


class SpeechSeqConfig(PretrainedConfig):
    r"""
    Configuration of a [`SpeechSeqForConditionalGeneration`]: a pre-norm Transformer encoder-decoder over log-mel
    filterbanks, with a convolutional subsampling front end and an auxiliary CTC head on the encoder.

    Args:
        vocab_size (`int`, defaults to 64): number of output tokens (the tokenizer's `len(tokenizer)`).
        d_model (`int`, defaults to 256): width of every layer.
        encoder_layers (`int`, defaults to 12): number of encoder layers.
        decoder_layers (`int`, defaults to 6): number of decoder layers.
        encoder_attention_heads (`int`, defaults to 4): attention heads per encoder layer; must divide `d_model`.
        decoder_attention_heads (`int`, defaults to 4): attention heads per decoder layer; must divide `d_model`.
        encoder_ffn_dim (`int`, defaults to 2048): hidden width of the encoder feed-forward blocks.
        decoder_ffn_dim (`int`, defaults to 2048): hidden width of the decoder feed-forward blocks.
        activation_function (`str`, defaults to `"relu"`): one of `"relu"`, `"gelu"`, `"silu"`, `"swish"`,
            `"gelu_new"`.
        dropout (`float`, defaults to 0.1): dropout on embeddings and residual branches.
        attention_dropout (`float`, defaults to 0.0): dropout on attention weights.
        activation_dropout (`float`, defaults to 0.0): dropout inside the feed-forward blocks.
        num_mel_bins (`int`, defaults to 80): filterbank channels of the input features.
        input_mode (`str`, defaults to `"fbank"`): what the encoder hears: `"fbank"`, log-mel filterbanks; or, the
            "Echo" variants, `"waveform"`, the waveform through a learned, strided convolution filterbank (25 ms
            window, 10 ms hop, `num_mel_bins` filters) and a front end of its own; or `"fusion"`, both front ends
            blended by a learned weight, `sigmoid(w) * fbank + (1 - sigmoid(w)) * waveform` (w starts at 0). The
            feature extractor's `input_mode` must match: each frame carries its `num_mel_bins` log-mels, its 160
            waveform samples, or both (`input_size` values).
        subsampling (`str`, defaults to `"conv2d"`): the front end: `"conv2d"`, ESPnet's 2-D convolutions over time x
            mel bins; or `"conv1d"`, 1-D convolutions over time with the mel bins as input channels (as Speech2Text and
            Whisper), several times cheaper to train on a CPU at the same number of encoder frames.
        subsampling_factor (`int`, defaults to 4): time reduction of the front end: 2, 4, 6 or 8.
        subsampling_channels (`int`, defaults to 256): channels of the subsampling convolutions.
        subsampling_lstm (`bool`, defaults to `False`): add a bidirectional LSTM after the convolutions, as in the
            assignment's `SpeechEmbedding`.
        max_source_positions (`int`, defaults to 3000): most encoder frames (after subsampling) the model accepts:
            with factor 4 and a 10 ms hop, 2 minutes of audio.
        max_target_positions (`int`, defaults to 448): most decoder tokens, and the default generation length.
        position_embedding (`str`, defaults to `"sinusoidal"`): `"sinusoidal"`, added to the encoder's frames and the
            decoder's tokens (Vaswani et al., 2017); or `"rotary"`, rotating the queries and keys of self-attention
            by position (RoFormer, Su et al., 2021), one of the "Echo" variants. Cross-attention has no positions.
        attention_mask_mode (`str`, defaults to `"hard"`): how attention leaves out masked positions (padding, the
            decoder's future): `"hard"` sets their logits to -inf; `"soft"` (experimental, an "Echo" variant)
            multiplies them by 1e-6, which leaves them a weight of about exp(0): padding and, in the decoder, future
            tokens stay visible (see `tests/test_modeling_speechseq.py`).
        active_encoder_layers (`int`, *optional*): run only the first this many encoder layers (progressive
            training grows it; saved, so a checkpoint taken mid-schedule decodes as it was trained). `None`: all.
        active_decoder_layers (`int`, *optional*): the same for the decoder.
        pad_token_id (`int`, defaults to 0): `[PAD]`.
        bos_token_id (`int`, defaults to 3): `[SOS]`.
        eos_token_id (`int`, defaults to 4): `[EOS]`; ends generation.
        decoder_start_token_id (`int`, defaults to 3): first decoder input, `[SOS]`.
        blank_token_id (`int`, defaults to 5): the CTC blank, `[BLANK]`.
        ctc_weight (`float`, defaults to 0.3): weight of the CTC loss in `(1 - w) * attention + w * ctc`; 0 skips CTC.
        ctc_loss_reduction (`str`, defaults to `"mean"`): `"mean"` (each utterance's loss divided by its target
            length, then averaged, as `torch.nn.CTCLoss`) or `"sum"`.
        ctc_zero_infinity (`bool`, defaults to `True`): zero infinite CTC losses (inputs too short for their
            targets) and their gradients instead of poisoning the batch.
        label_smoothing (`float`, defaults to 0.1): label smoothing of the attention cross-entropy.
        tie_word_embeddings (`bool`, defaults to `True`): share the decoder's token embedding with its output layer.
        layer_norm_eps (`float`, defaults to 1e-5): epsilon of every LayerNorm.
        init_std (`float`, defaults to 0.02): standard deviation of the normal weight initialisation.
        spec_augment_freq_masks (`int`, defaults to 0): SpecAugment frequency masks per utterance, applied to the
            input features in training only (0 turns them off).
        spec_augment_freq_width (`int`, defaults to 27): widest frequency mask, in mel bins.
        spec_augment_time_masks (`int`, defaults to 0): SpecAugment time masks per utterance (0 turns them off).
        spec_augment_time_width (`int`, defaults to 40): widest time mask, in frames; never more than a fifth of
            the utterance, and never past its last real frame.
        vtlp_warp (`float`, defaults to 0): vocal-tract-length perturbation (Jaitly & Hinton, 2013), training only:
            each utterance's log-mel frequency axis is warped by a factor drawn uniformly from `[1 - vtlp_warp,
            1 + vtlp_warp]` (0.1 is the usual range), as if a speaker with a shorter or longer vocal tract said it;
            0 turns it off.
        encoder_block (`str`, defaults to `"transformer"`): the encoder's layers: `"transformer"` (self-attention and
            a feed-forward block, the assignment's model) or `"conformer"` (Gulati et al., 2020, pre-norm: half-step
            feed-forward, self-attention, convolution module, half-step feed-forward, final LayerNorm; Swish inside).
        conv_kernel_size (`int`, defaults to 15): width of the Conformer's depthwise convolution, in encoder frames;
            odd, so that each frame sees as many frames on each side.
        conv_norm (`str`, defaults to `"layer_norm"`): the normalisation after the depthwise convolution:
            `"layer_norm"` (per frame: padding never reaches it) or `"batch_norm"` (the paper's; its training
            statistics count padding frames, so a padded batch trains slightly differently from one utterance).
        interctc_layers (`list[int]`, defaults to `[]`): intermediate CTC (Lee & Watanabe, 2021): after each of these
            encoder layers (1-based, below the last), the shared CTC head also scores the (final-normed) states.
        interctc_weight (`float`, defaults to 0.0): the CTC loss becomes `(1 - w) * final + w * mean(intermediate)`.
        self_conditioning (`bool`, defaults to `False`): add each intermediate CTC posterior, projected back to
            `d_model`, to the next layer's input (self-conditioned CTC, Nozaki & Komatsu, 2021); in decoding too.
        ctc_consistency_weight (`float`, defaults to 0.0): consistency-regularised CTC (CR-CTC, Yao et al., 2025):
            above 0, training runs the model on two views of each batch (the same utterances under independent
            SpecAugment masks and VTLP warps) and adds to the CTC loss `w` times the KL divergence of each view's CTC
            posteriors from the other's (held fixed), summed over real frames and divided by the target tokens as
            CTC's loss is. A step then costs about twice as much: halve the batch to keep its cost.
        encoder_type (`str`, defaults to `"speechseq"`): `"speechseq"`, the subsampling front end and
            `encoder_layers` layers above, trained from scratch; or `"whisper"`, transformers' `WhisperEncoder`
            (its 2x convolutional front end, positions and layers, pretrained: see
            [`SpeechSeqForConditionalGeneration.from_whisper`]), run on each utterance's real length, then
            `encoder_layers` speechseq layers (0 or more) and speechseq's CTC head and decoder. Its features are
            Whisper's log-mels (`SpeechSeqFeatureExtractor(features="whisper")`).
        whisper_encoder (`dict`, *optional*): for `encoder_type="whisper"`, the Whisper encoder's shape as
            transformers' `WhisperConfig` fields: `d_model`, `encoder_layers`, `encoder_attention_heads`,
            `encoder_ffn_dim`, `num_mel_bins` and `max_source_positions`.
        pretrained_encoder (`str`, *optional*): where the Whisper encoder's weights came from (a record, set by
            `from_whisper`; loading never reads it).
        use_weighted_layer_sum (`bool`, defaults to `False`): for `encoder_type="whisper"`, the layers above read a
            learnt, softmax-weighted sum of the Whisper encoder's hidden states (the input of each of its layers,
            normalised, and its final normed output), as SUPERB (Yang et al., 2021) reads a frozen speech encoder
            and transformers' audio classifiers do under this name; `False`: its final output only.

    Example:

    ```python
    >>> from speechseq import SpeechSeqConfig, SpeechSeqForConditionalGeneration
    >>> config = SpeechSeqConfig.from_preset("tiny", vocab_size=40)
    >>> model = SpeechSeqForConditionalGeneration(config)
    >>> config.d_model
    64
    ```
    """

    model_type = "speechseq"
    # the cache in model outputs, named as transformers >= 5.24 names it, or as before
    keys_to_ignore_at_inference = ["cache", "past_key_values"]
    attribute_map = {
        "hidden_size": "d_model",
        "num_attention_heads": "encoder_attention_heads",
        "num_hidden_layers": "encoder_layers",
    }

    def __init__(
        self,
        vocab_size=64,
        d_model=256,
        encoder_layers=12,
        decoder_layers=6,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=2048,
        decoder_ffn_dim=2048,
        activation_function="relu",
        dropout=0.1,
        attention_dropout=0.0,
        activation_dropout=0.0,
        num_mel_bins=80,
        input_mode="fbank",
        subsampling="conv2d",
        subsampling_factor=4,
        subsampling_channels=256,
        subsampling_lstm=False,
        max_source_positions=3000,
        max_target_positions=448,
        position_embedding="sinusoidal",
        attention_mask_mode="hard",
        active_encoder_layers=None,
        active_decoder_layers=None,
        pad_token_id=0,
        bos_token_id=3,
        eos_token_id=4,
        decoder_start_token_id=3,
        blank_token_id=5,
        ctc_weight=0.3,
        ctc_loss_reduction="mean",
        ctc_zero_infinity=True,
        label_smoothing=0.1,
        tie_word_embeddings=True,
        layer_norm_eps=1e-5,
        init_std=0.02,
        spec_augment_freq_masks=0,
        spec_augment_freq_width=27,
        spec_augment_time_masks=0,
        spec_augment_time_width=40,
        vtlp_warp=0.0,
        encoder_block="transformer",
        conv_kernel_size=15,
        conv_norm="layer_norm",
        interctc_layers=(),
        interctc_weight=0.0,
        self_conditioning=False,
        ctc_consistency_weight=0.0,
        encoder_type="speechseq",
        whisper_encoder=None,
        pretrained_encoder=None,
        use_weighted_layer_sum=False,
        is_encoder_decoder=True,
        use_cache=True,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.d_model = d_model
        self.encoder_layers = encoder_layers
        self.decoder_layers = decoder_layers
        self.encoder_attention_heads = encoder_attention_heads
        self.decoder_attention_heads = decoder_attention_heads
        self.encoder_ffn_dim = encoder_ffn_dim
        self.decoder_ffn_dim = decoder_ffn_dim
        self.activation_function = activation_function
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.activation_dropout = activation_dropout
        self.num_mel_bins = num_mel_bins
        self.input_mode = input_mode
        self.subsampling = subsampling
        self.subsampling_factor = subsampling_factor
        self.subsampling_channels = subsampling_channels
        self.subsampling_lstm = subsampling_lstm
        self.max_source_positions = max_source_positions
        self.max_target_positions = max_target_positions
        self.position_embedding = position_embedding
        self.attention_mask_mode = attention_mask_mode
        self.active_encoder_layers = active_encoder_layers
        self.active_decoder_layers = active_decoder_layers
        self.blank_token_id = blank_token_id
        self.ctc_weight = ctc_weight
        self.ctc_loss_reduction = ctc_loss_reduction
        self.ctc_zero_infinity = ctc_zero_infinity
        self.label_smoothing = label_smoothing
        self.layer_norm_eps = layer_norm_eps
        self.init_std = init_std
        self.spec_augment_freq_masks = spec_augment_freq_masks
        self.spec_augment_freq_width = spec_augment_freq_width
        self.spec_augment_time_masks = spec_augment_time_masks
        self.spec_augment_time_width = spec_augment_time_width
        self.vtlp_warp = vtlp_warp
        self.encoder_block = encoder_block
        self.conv_kernel_size = conv_kernel_size
        self.conv_norm = conv_norm
        self.interctc_layers = list(interctc_layers)
        self.interctc_weight = interctc_weight
        self.self_conditioning = self_conditioning
        self.ctc_consistency_weight = ctc_consistency_weight
        self.encoder_type = encoder_type
        self.whisper_encoder = None if whisper_encoder is None else dict(whisper_encoder)
        self.pretrained_encoder = pretrained_encoder
        self.use_weighted_layer_sum = use_weighted_layer_sum
        self.use_cache = use_cache
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            decoder_start_token_id=decoder_start_token_id,
            is_encoder_decoder=is_encoder_decoder,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )
        self._validate()

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "SpeechSeqConfig":
        """A config of a named shape (`"tiny"` for tests, `"small"` for real training), with any field overridden."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    @property
    def input_size(self) -> int:
        """Values per input frame: the log-mels, the waveform samples of the frame's hop, or both (in that order)."""
        return {"fbank": self.num_mel_bins, "waveform": SAMPLES_PER_FRAME,
                "fusion": self.num_mel_bins + SAMPLES_PER_FRAME}[self.input_mode]  # fmt: skip

    @property
    def min_input_frames(self) -> int:
        """The fewest filterbank frames that survive the subsampling front end (give at least one encoder frame)."""
        if self.encoder_type == "whisper":  # padded convolutions: any length gives frames
            return 1
        frames = 1
        for kernel, stride in reversed(SUBSAMPLING_CONVS[self.subsampling_factor]):
            frames = (frames - 1) * stride + kernel
        return frames

    def _validate(self):
        if self.encoder_type not in ("speechseq", "whisper"):
            raise ValueError(f"encoder_type must be 'speechseq' or 'whisper', got {self.encoder_type!r}")
        if self.encoder_type == "whisper":
            self._validate_whisper()
        elif self.use_weighted_layer_sum:
            raise ValueError("use_weighted_layer_sum needs encoder_type='whisper': it weighs a Whisper encoder's layers")
        else:
            _require_positive_ints(self, ("encoder_layers",))
        _require_positive_ints(self, (
            "vocab_size", "d_model", "decoder_layers", "encoder_attention_heads",
            "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim", "num_mel_bins", "subsampling_channels",
            "max_source_positions", "max_target_positions",
        ))  # fmt: skip
        for name in ("spec_augment_freq_masks", "spec_augment_freq_width", "spec_augment_time_masks",
                     "spec_augment_time_width"):  # fmt: skip
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        warp = self.vtlp_warp
        if isinstance(warp, bool) or not isinstance(warp, (int, float)) or not 0.0 <= warp < 0.5:
            raise ValueError(f"vtlp_warp must be a number in [0, 0.5) (0.1: factors 0.9 to 1.1), got {warp!r}")
        _require_heads_divide(self, ("encoder_attention_heads", "decoder_attention_heads"))
        _require_fractions(self, ("dropout", "attention_dropout", "activation_dropout", "ctc_weight", "label_smoothing"))
        if self.label_smoothing == 1.0 or self.dropout == 1.0:
            raise ValueError("label_smoothing and dropout must be below 1")
        if self.input_mode not in INPUT_MODES:
            raise ValueError(f"input_mode must be one of {INPUT_MODES}, got {self.input_mode!r}")
        if self.subsampling not in ("conv2d", "conv1d"):
            raise ValueError(f"subsampling must be 'conv2d' or 'conv1d', got {self.subsampling!r}")
        if self.subsampling_factor not in SUBSAMPLING_CONVS:
            raise ValueError(f"subsampling_factor must be one of {sorted(SUBSAMPLING_CONVS)}, got {self.subsampling_factor!r}")
        if self.subsampling == "conv2d" and self.num_mel_bins < self.min_input_frames:
            raise ValueError(f"num_mel_bins={self.num_mel_bins} is too few for subsampling_factor={self.subsampling_factor}")
        if self.ctc_loss_reduction not in ("mean", "sum"):
            raise ValueError(f"ctc_loss_reduction must be 'mean' or 'sum', got {self.ctc_loss_reduction!r}")
        for name in ("active_encoder_layers", "active_decoder_layers"):
            value, total = getattr(self, name), getattr(self, name.replace("active_", ""))
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= total):
                raise ValueError(f"{name} must be None or an integer in [1, {total}], got {value!r}")
        if self.encoder_block not in ("transformer", "conformer"):
            raise ValueError(f"encoder_block must be 'transformer' or 'conformer', got {self.encoder_block!r}")
        if not isinstance(self.conv_kernel_size, int) or self.conv_kernel_size < 1 or self.conv_kernel_size % 2 == 0:
            raise ValueError(f"conv_kernel_size must be a positive odd integer, got {self.conv_kernel_size!r}")
        if self.conv_norm not in ("layer_norm", "batch_norm"):
            raise ValueError(f"conv_norm must be 'layer_norm' or 'batch_norm', got {self.conv_norm!r}")
        bad = [i for i in self.interctc_layers if not isinstance(i, int) or not 1 <= i < self.encoder_layers]
        if bad or len(set(self.interctc_layers)) != len(self.interctc_layers):
            raise ValueError(f"interctc_layers must be distinct encoder layers in [1, {self.encoder_layers - 1}] "
                             f"(1-based, below the last), got {self.interctc_layers!r}")  # fmt: skip
        _require_fractions(self, ("interctc_weight",))
        if (self.interctc_weight > 0 or self.self_conditioning) and not self.interctc_layers:
            raise ValueError("interctc_weight > 0 and self_conditioning need interctc_layers")
        if self.interctc_weight > 0 and self.ctc_weight == 0:
            raise ValueError("interctc_weight > 0 needs ctc_weight > 0: the intermediate losses are part of the CTC loss")
        weight = self.ctc_consistency_weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            raise ValueError(f"ctc_consistency_weight must be a non-negative number, got {weight!r}")
        if weight > 0 and self.ctc_weight == 0:
            raise ValueError("ctc_consistency_weight > 0 needs ctc_weight > 0: it regularises the CTC posteriors")
        _require_common(self)
        _require_token_ids(self, ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id", "blank_token_id"))

    def _validate_whisper(self):
        whisper = self.whisper_encoder
        if not isinstance(whisper, dict) or sorted(whisper) != sorted(WHISPER_ENCODER_FIELDS):
            raise ValueError(f"encoder_type='whisper' needs whisper_encoder, a dict of {list(WHISPER_ENCODER_FIELDS)} "
                             f"(e.g. WHISPER_ENCODERS['tiny']), got {whisper!r}")  # fmt: skip
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in whisper.values()):
            raise ValueError(f"whisper_encoder's fields must be positive integers, got {whisper}")
        if not isinstance(self.encoder_layers, int) or isinstance(self.encoder_layers, bool) or self.encoder_layers < 0:
            raise ValueError(f"encoder_layers (speechseq layers above the Whisper encoder) must be a non-negative "
                             f"integer, got {self.encoder_layers!r}")  # fmt: skip
        if self.input_mode != "fbank" or self.num_mel_bins != whisper["num_mel_bins"]:
            raise ValueError(f"a Whisper encoder hears {whisper['num_mel_bins']} log-mels: input_mode must be 'fbank' "
                             f"and num_mel_bins {whisper['num_mel_bins']}, got {self.input_mode!r} and "
                             f"{self.num_mel_bins}")  # fmt: skip
        if whisper["d_model"] % whisper["encoder_attention_heads"]:
            raise ValueError(f"whisper_encoder: encoder_attention_heads must divide d_model, got {whisper}")
        if self.max_source_positions > whisper["max_source_positions"]:
            raise ValueError(f"max_source_positions={self.max_source_positions} is more than the Whisper encoder's "
                             f"{whisper['max_source_positions']} positions")  # fmt: skip


class SpeechSeqLMConfig(PretrainedConfig):
    r"""
    Configuration of a [`SpeechSeqForCausalLM`]: a decoder-only pre-norm Transformer language model built from the
    ASR decoder's layers (without cross-attention), for shallow fusion in beam search and to initialise the ASR
    decoder. Field names are the ASR decoder's (as transformers' Speech2Text2 / TrOCR causal LMs), so weights map
    one to one.

    Args:
        vocab_size (`int`, defaults to 64): number of tokens; must equal the ASR model's to fuse with it.
        d_model (`int`, defaults to 256): width of every layer.
        decoder_layers (`int`, defaults to 6): number of layers.
        decoder_attention_heads (`int`, defaults to 4): attention heads per layer; must divide `d_model`.
        decoder_ffn_dim (`int`, defaults to 1024): hidden width of the feed-forward blocks.
        activation_function (`str`, defaults to `"relu"`): as in [`SpeechSeqConfig`].
        dropout (`float`, defaults to 0.1): dropout on embeddings and residual branches.
        attention_dropout (`float`, defaults to 0.0): dropout on attention weights.
        activation_dropout (`float`, defaults to 0.0): dropout inside the feed-forward blocks.
        max_target_positions (`int`, defaults to 448): longest token sequence.
        position_embedding (`str`, defaults to `"sinusoidal"`), attention_mask_mode (`str`, defaults to `"hard"`): as
            in [`SpeechSeqConfig`].
        pad_token_id (`int`, defaults to 0), bos_token_id (`int`, defaults to 3), eos_token_id (`int`, defaults to 4):
            `[PAD]`, `[SOS]` (first input, as the ASR decoder's start token) and `[EOS]`.
        tie_word_embeddings (`bool`, defaults to `True`): share the token embedding with the output layer.
        layer_norm_eps (`float`, defaults to 1e-5), init_std (`float`, defaults to 0.02): as in [`SpeechSeqConfig`].

    Example:

    ```python
    >>> from speechseq import SpeechSeqLMConfig, SpeechSeqForCausalLM
    >>> config = SpeechSeqLMConfig.from_preset("tiny", vocab_size=40)
    >>> SpeechSeqForCausalLM(config).config.decoder_layers
    2
    ```
    """

    model_type = "speechseq_lm"
    # the cache in model outputs, named as transformers >= 5.24 names it, or as before
    keys_to_ignore_at_inference = ["cache", "past_key_values"]
    attribute_map = {
        "hidden_size": "d_model",
        "num_attention_heads": "decoder_attention_heads",
        "num_hidden_layers": "decoder_layers",
    }

    def __init__(
        self,
        vocab_size=64,
        d_model=256,
        decoder_layers=6,
        decoder_attention_heads=4,
        decoder_ffn_dim=1024,
        activation_function="relu",
        dropout=0.1,
        attention_dropout=0.0,
        activation_dropout=0.0,
        max_target_positions=448,
        position_embedding="sinusoidal",
        attention_mask_mode="hard",
        pad_token_id=0,
        bos_token_id=3,
        eos_token_id=4,
        tie_word_embeddings=True,
        layer_norm_eps=1e-5,
        init_std=0.02,
        use_cache=True,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.d_model = d_model
        self.decoder_layers = decoder_layers
        self.decoder_attention_heads = decoder_attention_heads
        self.decoder_ffn_dim = decoder_ffn_dim
        self.activation_function = activation_function
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.activation_dropout = activation_dropout
        self.max_target_positions = max_target_positions
        self.position_embedding = position_embedding
        self.attention_mask_mode = attention_mask_mode
        self.layer_norm_eps = layer_norm_eps
        self.init_std = init_std
        self.use_cache = use_cache
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )
        self._validate()

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "SpeechSeqLMConfig":
        """A config of a named shape (`"tiny"`, or `"small"`: the `small` ASR decoder's shape), any field overridden."""
        if name not in LM_PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(LM_PRESETS)}")
        return cls(**{**LM_PRESETS[name], **overrides})

    def _validate(self):
        _require_positive_ints(self, ("vocab_size", "d_model", "decoder_layers", "decoder_attention_heads",
                                      "decoder_ffn_dim", "max_target_positions"))  # fmt: skip
        _require_heads_divide(self, ("decoder_attention_heads",))
        _require_fractions(self, ("dropout", "attention_dropout", "activation_dropout"))
        if self.dropout == 1.0:
            raise ValueError("dropout must be below 1")
        _require_common(self)
        _require_token_ids(self, ("pad_token_id", "bos_token_id", "eos_token_id"))


def _require_positive_ints(config, names):
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _require_heads_divide(config, names):
    for name in names:
        if config.d_model % getattr(config, name):
            raise ValueError(f"{name}={getattr(config, name)} must divide d_model={config.d_model}")


def _require_fractions(config, names):
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")


def _require_common(config):
    if config.position_embedding not in ("sinusoidal", "rotary"):
        raise ValueError(f"position_embedding must be 'sinusoidal' or 'rotary', got {config.position_embedding!r}")
    if config.attention_mask_mode not in ("hard", "soft"):
        raise ValueError(f"attention_mask_mode must be 'hard' or 'soft', got {config.attention_mask_mode!r}")
    heads = [getattr(config, name, 1) for name in ("encoder_attention_heads", "decoder_attention_heads")]
    if config.position_embedding == "rotary" and any((config.d_model // h) % 2 for h in heads):
        raise ValueError("rotary positions rotate pairs of channels: d_model / attention heads must be even")
    if config.activation_function not in _ACTIVATIONS:
        raise ValueError(f"activation_function must be one of {_ACTIVATIONS}, got {config.activation_function!r}")
    if not isinstance(config.layer_norm_eps, float) or config.layer_norm_eps <= 0:
        raise ValueError(f"layer_norm_eps must be a positive float, got {config.layer_norm_eps!r}")
    if not isinstance(config.init_std, (int, float)) or config.init_std <= 0:
        raise ValueError(f"init_std must be positive, got {config.init_std!r}")


def _require_token_ids(config, names):
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or not 0 <= value < config.vocab_size:
            raise ValueError(f"{name}={value!r} must be a token id in [0, vocab_size={config.vocab_size})")
