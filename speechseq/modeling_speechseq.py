"""The speechseq model: a pre-norm Transformer encoder-decoder over log-mel filterbanks with an auxiliary CTC head.

Reads top to bottom: subsampling front end, attention, the two layer types, encoder, decoder, and the two
`PreTrainedModel`s. The beam search is not here: the model only exposes the encoder, a cached decoder step and CTC
log-probabilities.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutput, BaseModelOutputWithPastAndCrossAttentions, Seq2SeqLMOutput
from transformers.modeling_outputs import Seq2SeqModelOutput
from transformers.models.auto.modeling_auto import MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES

from .configuration_speechseq import SUBSAMPLING_CONVS, SpeechSeqConfig

__all__ = ["SpeechSeqPreTrainedModel", "SpeechSeqModel", "SpeechSeqForConditionalGeneration", "SpeechSeqOutput"]


@dataclass
class SpeechSeqOutput(Seq2SeqLMOutput):
    r"""
    [`Seq2SeqLMOutput`] with the parts of the joint CTC/attention loss and the CTC branch.

    attention_loss (`torch.FloatTensor`, *optional*): label-smoothed cross-entropy of the decoder (with `labels`).
    ctc_loss (`torch.FloatTensor`, *optional*): CTC loss of the encoder (with `labels` and `ctc_weight > 0`).
    ctc_logits (`torch.FloatTensor` of shape `(batch, encoder_frames, vocab_size)`, *optional*): CTC head output,
        computed whenever this call ran the encoder or was given `labels`.
    encoder_output_lengths (`torch.LongTensor` of shape `(batch,)`): real encoder frames of each utterance.
    """

    attention_loss: torch.FloatTensor | None = None
    ctc_loss: torch.FloatTensor | None = None
    ctc_logits: torch.FloatTensor | None = None
    encoder_output_lengths: torch.LongTensor | None = None


def sinusoids(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embeddings (tensor2tensor layout: sines then cosines) of integer `positions`: (...) -> (..., dim).

    Computed on the fly instead of stored as a buffer, so any position works and nothing needs restoring on load.
    """
    half = dim // 2
    inv_timescales = torch.exp(
        -math.log(10000.0) / max(half - 1, 1) * torch.arange(half, device=positions.device, dtype=torch.float32)
    )
    angles = positions.float()[..., None] * inv_timescales
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def shift_tokens_right(labels: torch.Tensor, pad_token_id: int, decoder_start_token_id: int) -> torch.Tensor:
    """Decoder inputs from labels: prepend the start token, drop the last label, and turn -100 into padding."""
    shifted = labels.new_full(labels.shape, pad_token_id)
    shifted[:, 1:] = labels[:, :-1]
    shifted[:, 0] = decoder_start_token_id
    return shifted.masked_fill(shifted == -100, pad_token_id)


def subsampled_lengths(lengths: torch.Tensor, subsampling_factor: int) -> torch.Tensor:
    """Encoder frames left from `lengths` input frames by the strided, unpadded convolutions of the front end."""
    for kernel, stride in SUBSAMPLING_CONVS[subsampling_factor]:
        lengths = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
    return lengths


def lengths_to_mask(lengths: torch.Tensor, max_length: int) -> torch.Tensor:
    """(B,) lengths -> (B, max_length) bool, True on real positions."""
    return torch.arange(max_length, device=lengths.device) < lengths[:, None]


def spec_augment(features: torch.Tensor, lengths: torch.Tensor, config: SpeechSeqConfig) -> torch.Tensor:
    """SpecAugment (Park et al., 2019) without time warping: zero `spec_augment_freq_masks` bands of up to
    `spec_augment_freq_width` mel bins and `spec_augment_time_masks` spans of up to `spec_augment_time_width` frames
    (at most a fifth of the utterance), all inside each utterance's real frames. (B, T, F) -> (B, T, F)."""
    B, T, num_bins = features.shape
    device = features.device
    real = lengths_to_mask(lengths, T)  # (B, T)
    masked = torch.zeros(B, T, num_bins, dtype=torch.bool, device=device)
    bins, frames = torch.arange(num_bins, device=device), torch.arange(T, device=device)
    for _ in range(config.spec_augment_freq_masks):
        width = (torch.rand(B, device=device) * (config.spec_augment_freq_width + 1)).long()
        start = (torch.rand(B, device=device) * (num_bins - width + 1)).long()
        masked |= ((bins >= start[:, None]) & (bins < (start + width)[:, None]))[:, None, :]
    longest = torch.clamp(lengths // 5, max=config.spec_augment_time_width)
    for _ in range(config.spec_augment_time_masks):
        width = (torch.rand(B, device=device) * (longest + 1)).long()
        start = (torch.rand(B, device=device) * (lengths - width + 1)).long()
        masked |= ((frames >= start[:, None]) & (frames < (start + width)[:, None]))[:, :, None]
    return features.masked_fill(masked & real[..., None], 0.0)


class Conv2dSubsampling(nn.Module):
    """Strided 2-D convolutions over (time, frequency), then a linear map to `d_model`; optionally a BiLSTM."""

    def __init__(self, config: SpeechSeqConfig):
        super().__init__()
        channels, freq = config.subsampling_channels, config.num_mel_bins
        self.convs = nn.ModuleList()
        for i, (kernel, stride) in enumerate(SUBSAMPLING_CONVS[config.subsampling_factor]):
            self.convs.append(nn.Conv2d(1 if i == 0 else channels, channels, kernel, stride))
            freq = (freq - kernel) // stride + 1
        self.out = nn.Linear(channels * freq, config.d_model)
        self.lstm = (
            nn.LSTM(config.d_model, config.d_model // 2, batch_first=True, bidirectional=True)
            if config.subsampling_lstm
            else None
        )

    def forward(self, input_features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = input_features.unsqueeze(1)  # (B, 1, T, F)
        for conv in self.convs:
            x = F.relu(conv(x))  # (B, C, T', F')
        B, C, T, Fr = x.shape
        x = self.out(x.transpose(1, 2).reshape(B, T, C * Fr))  # (B, T', d_model)
        if self.lstm is not None:
            # Packed, so padding never flows backwards into an utterance's real frames.
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            x, _ = nn.utils.rnn.pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=T)
        return x


class SpeechSeqAttention(nn.Module):
    """Multi-head attention through `scaled_dot_product_attention`; the explicit path returns the weights.

    Masks are boolean, broadcastable to (B, heads, T_query, T_key), True where a query may attend.
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float, layer_idx: int | None = None):
        super().__init__()
        self.num_heads, self.head_dim, self.dropout, self.layer_idx = num_heads, d_model // num_heads, dropout, layer_idx
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(*x.shape[:2], self.num_heads, self.head_dim).transpose(1, 2)  # (B, heads, T, head_dim)

    def forward(self, x, key_value_states=None, mask=None, past_key_values=None, output_attentions=False):
        q = self._heads(self.q_proj(x))
        if key_value_states is None:  # self-attention: append this step's keys and values to the cache
            k, v = self._heads(self.k_proj(x)), self._heads(self.v_proj(x))
            if past_key_values is not None:
                k, v = past_key_values.self_attention_cache.update(k, v, self.layer_idx)
        elif past_key_values is not None and past_key_values.is_updated.get(self.layer_idx):
            # cross-attention: the encoder's keys and values are projected once per utterance, then reused
            layer = past_key_values.cross_attention_cache.layers[self.layer_idx]
            k, v = layer.keys, layer.values
        else:
            k, v = self._heads(self.k_proj(key_value_states)), self._heads(self.v_proj(key_value_states))
            if past_key_values is not None:
                k, v = past_key_values.cross_attention_cache.update(k, v, self.layer_idx)
                past_key_values.is_updated[self.layer_idx] = True

        dropout = self.dropout if self.training else 0.0
        if output_attentions:
            scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # (B, heads, T_query, T_key)
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            weights = F.dropout(scores.softmax(dim=-1), dropout, self.training)
            y = weights @ v
        else:
            y, weights = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout), None
        y = y.transpose(1, 2).reshape(*x.shape[:2], -1)  # (B, T_query, d_model)
        return self.out_proj(y), weights


class FeedForward(nn.Module):
    def __init__(self, d_model: int, ffn_dim: int, activation: str, activation_dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(d_model, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, d_model)
        self.activation = ACT2FN[activation]
        self.dropout = nn.Dropout(activation_dropout)

    def forward(self, x):
        return self.fc2(self.dropout(self.activation(self.fc1(x))))


class SpeechSeqEncoderLayer(GradientCheckpointingLayer):
    """Pre-norm: x + SelfAttention(LN(x)), then x + FeedForward(LN(x))."""

    def __init__(self, config: SpeechSeqConfig):
        super().__init__()
        d, eps = config.d_model, config.layer_norm_eps
        self.self_attn_layer_norm = nn.LayerNorm(d, eps=eps)
        self.self_attn = SpeechSeqAttention(d, config.encoder_attention_heads, config.attention_dropout)
        self.final_layer_norm = nn.LayerNorm(d, eps=eps)
        self.mlp = FeedForward(d, config.encoder_ffn_dim, config.activation_function, config.activation_dropout)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, mask=None, output_attentions=False):
        h, weights = self.self_attn(self.self_attn_layer_norm(x), mask=mask, output_attentions=output_attentions)
        x = x + self.dropout(h)
        x = x + self.dropout(self.mlp(self.final_layer_norm(x)))
        return x, weights


class SpeechSeqDecoderLayer(GradientCheckpointingLayer):
    """Pre-norm: causal self-attention, cross-attention over the encoder (unless `cross_attention=False`, as in
    the decoder-only language model), feed-forward; each as x + Block(LN(x))."""

    def __init__(self, config: SpeechSeqConfig, layer_idx: int, cross_attention: bool = True):
        super().__init__()
        d, eps, heads = config.d_model, config.layer_norm_eps, config.decoder_attention_heads
        self.self_attn_layer_norm = nn.LayerNorm(d, eps=eps)
        self.self_attn = SpeechSeqAttention(d, heads, config.attention_dropout, layer_idx)
        if cross_attention:
            self.encoder_attn_layer_norm = nn.LayerNorm(d, eps=eps)
            self.encoder_attn = SpeechSeqAttention(d, heads, config.attention_dropout, layer_idx)
        self.final_layer_norm = nn.LayerNorm(d, eps=eps)
        self.mlp = FeedForward(d, config.decoder_ffn_dim, config.activation_function, config.activation_dropout)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x,
        self_mask=None,
        encoder_hidden_states=None,
        encoder_mask=None,
        past_key_values=None,
        output_attentions=False,
    ):
        h, self_weights = self.self_attn(
            self.self_attn_layer_norm(x), mask=self_mask, past_key_values=past_key_values,
            output_attentions=output_attentions,
        )  # fmt: skip
        x = x + self.dropout(h)
        cross_weights = None
        if encoder_hidden_states is not None:
            h, cross_weights = self.encoder_attn(
                self.encoder_attn_layer_norm(x), key_value_states=encoder_hidden_states, mask=encoder_mask,
                past_key_values=past_key_values, output_attentions=output_attentions,
            )  # fmt: skip
            x = x + self.dropout(h)
        x = x + self.dropout(self.mlp(self.final_layer_norm(x)))
        return x, self_weights, cross_weights


class SpeechSeqPreTrainedModel(PreTrainedModel):
    config_class = SpeechSeqConfig
    base_model_prefix = "model"
    main_input_name = "input_features"
    input_modalities = ("audio", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["SpeechSeqEncoderLayer", "SpeechSeqDecoderLayer"]
    _supports_sdpa = True
    # The loss is a mean over the batch's tokens (and utterances, for CTC); it takes no `num_items_in_batch`. Without
    # this, the Trainer sees `**kwargs` in forward and multiplies the loss by the number of processes.
    accepts_loss_kwargs = False

    def _init_weights(self, module):
        if isinstance(module, nn.Conv2d):
            # The subsampling convolutions feed ReLUs: He initialisation keeps their activations at unit scale, where
            # transformers' N(0, init_std) default shrinks them ~30x per layer and starves the encoder of audio.
            init.kaiming_normal_(module.weight, nonlinearity="relu")
            init.zeros_(module.bias)
        else:
            super()._init_weights(module)

    def _get_feat_extract_output_lengths(self, input_lengths: torch.LongTensor) -> torch.LongTensor:
        """Encoder frames for `input_lengths` filterbank frames; exact for every length.

        Raises:
            ValueError: when an input has fewer frames than `config.min_input_frames`.
        """
        return encoder_lengths(self.config, torch.as_tensor(input_lengths))


class SpeechSeqEncoder(nn.Module):
    """Subsampling plus sinusoidal positions, pre-norm layers, final LayerNorm."""

    def __init__(self, config: SpeechSeqConfig):
        super().__init__()
        self.config = config
        self.subsampling = Conv2dSubsampling(config)
        self.layers = nn.ModuleList([SpeechSeqEncoderLayer(config) for _ in range(config.encoder_layers)])
        self.layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)
        self.gradient_checkpointing = False

    def forward(
        self,
        input_features: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        return_dict: bool = True,
        **kwargs,
    ) -> BaseModelOutput:
        """
        Args:
            input_features (`torch.FloatTensor` of shape `(batch, frames, num_mel_bins)`): log-mel filterbanks.
            attention_mask (`torch.LongTensor` of shape `(batch, frames)`, *optional*): 1 on real frames.
        """
        if input_features.dim() != 3 or input_features.shape[-1] != self.config.num_mel_bins:
            raise ValueError(
                f"input_features must have shape (batch, frames, {self.config.num_mel_bins}), "
                f"got {tuple(input_features.shape)}"
            )
        lengths = frame_lengths(input_features, attention_mask)
        out_lengths = encoder_lengths(self.config, lengths)
        if self.training and (self.config.spec_augment_freq_masks or self.config.spec_augment_time_masks):
            input_features = spec_augment(input_features, lengths, self.config)
        x = self.subsampling(input_features, out_lengths)
        T = x.shape[1]
        if T > self.config.max_source_positions:
            raise ValueError(
                f"input of {input_features.shape[1]} frames gives {T} encoder frames, more than "
                f"max_source_positions={self.config.max_source_positions}; split the audio into chunks"
            )
        # No sqrt(d_model) scaling here (unlike token embeddings): He-initialised convolutions already give unit-scale
        # frames, on a par with the positions (as in Whisper).
        x = x + sinusoids(torch.arange(T, device=x.device), x.shape[-1]).to(x.dtype)
        x = self.dropout(x)
        mask = None if attention_mask is None else lengths_to_mask(out_lengths, T)[:, None, None, :]
        hidden_states, attentions = [], []
        for layer in self.layers:
            hidden_states.append(x)
            x, weights = layer(x, mask, output_attentions)
            attentions.append(weights)
        x = self.layer_norm(x)
        hidden_states.append(x)
        return BaseModelOutput(
            last_hidden_state=x,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )


class SpeechSeqDecoder(nn.Module):
    """Token embedding (scaled) plus sinusoidal positions, pre-norm layers, final LayerNorm."""

    def __init__(self, config: SpeechSeqConfig, cross_attention: bool = True):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model, config.pad_token_id)
        self.layers = nn.ModuleList(
            [SpeechSeqDecoderLayer(config, i, cross_attention) for i in range(config.decoder_layers)]
        )
        self.layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)
        self.gradient_checkpointing = False

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        past_key_values: EncoderDecoderCache | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> BaseModelOutputWithPastAndCrossAttentions:
        """
        Args:
            input_ids (`torch.LongTensor` of shape `(batch, tokens)`): this step's tokens (only the new ones when
                `past_key_values` holds the earlier ones).
            attention_mask (`torch.Tensor` of shape `(batch, past + tokens)`, *optional*): 1 on real tokens.
            encoder_hidden_states (`torch.FloatTensor` of shape `(batch, frames, d_model)`, *optional*).
            encoder_attention_mask (`torch.BoolTensor` of shape `(batch, frames)`, *optional*): True on real frames.
            past_key_values (`EncoderDecoderCache`, *optional*): updated in place.
        """
        past = past_key_values.get_seq_length() if past_key_values is not None else 0
        T = input_ids.shape[1]
        if past + T > self.config.max_target_positions:
            raise ValueError(
                f"decoding {past + T} tokens exceeds max_target_positions={self.config.max_target_positions}"
            )
        positions = torch.arange(past, past + T, device=input_ids.device)
        x = self.embed_tokens(input_ids) * math.sqrt(self.config.d_model)
        x = self.dropout(x + sinusoids(positions, x.shape[-1]).to(x.dtype))

        self_mask = None  # (1 or B, 1, T, past + T): causal, and padding where a mask is given
        if T > 1:
            self_mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(past)[None, None]
        if attention_mask is not None and not attention_mask.bool().all():
            padding = attention_mask.bool()[:, None, None, :]
            self_mask = padding if self_mask is None else self_mask & padding
        cross_mask = None if encoder_attention_mask is None else encoder_attention_mask[:, None, None, :]

        hidden_states, self_attentions, cross_attentions = [], [], []
        for layer in self.layers:
            hidden_states.append(x)
            x, self_weights, cross_weights = layer(
                x, self_mask, encoder_hidden_states, cross_mask, past_key_values, output_attentions
            )
            self_attentions.append(self_weights)
            cross_attentions.append(cross_weights)
        x = self.layer_norm(x)
        hidden_states.append(x)
        return BaseModelOutputWithPastAndCrossAttentions(
            last_hidden_state=x,
            past_key_values=past_key_values,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            attentions=tuple(self_attentions) if output_attentions else None,
            cross_attentions=tuple(cross_attentions) if output_attentions and encoder_hidden_states is not None else None,
        )


def frame_lengths(input_features: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.LongTensor:
    """Real input frames of each utterance: from the frame-level mask, or all frames when there is none."""
    if attention_mask is None:
        return torch.full(input_features.shape[:1], input_features.shape[1], device=input_features.device)
    return attention_mask.sum(-1).long()


def encoder_lengths(config: SpeechSeqConfig, lengths: torch.Tensor) -> torch.LongTensor:
    too_short = lengths < config.min_input_frames
    if too_short.any():
        raise ValueError(
            f"input of {lengths[too_short].min().item()} frames is too short: the subsampling front end "
            f"(factor {config.subsampling_factor}) needs at least {config.min_input_frames} frames"
        )
    return subsampled_lengths(lengths, config.subsampling_factor)


class SpeechSeqModel(SpeechSeqPreTrainedModel):
    """The bare encoder-decoder, returning the decoder's last hidden states."""

    def __init__(self, config: SpeechSeqConfig):
        super().__init__(config)
        self.encoder = SpeechSeqEncoder(config)
        self.decoder = SpeechSeqDecoder(config)
        self.post_init()

    def get_input_embeddings(self):
        return self.decoder.embed_tokens

    def set_input_embeddings(self, value):
        self.decoder.embed_tokens = value

    def forward(
        self,
        input_features: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutput | tuple | None = None,
        past_key_values: EncoderDecoderCache | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> Seq2SeqModelOutput:
        output_attentions = bool(output_attentions)
        output_hidden_states = bool(output_hidden_states)
        if encoder_outputs is None:
            encoder_outputs = self.encoder(input_features, attention_mask, output_attentions, output_hidden_states)
        elif not isinstance(encoder_outputs, BaseModelOutput):
            encoder_outputs = BaseModelOutput(*encoder_outputs)
        encoder_hidden_states = encoder_outputs.last_hidden_state

        encoder_mask = None
        if attention_mask is not None:
            lengths = encoder_lengths(self.config, attention_mask.sum(-1).long())
            encoder_mask = lengths_to_mask(lengths, encoder_hidden_states.shape[1])

        if use_cache is None:
            use_cache = self.config.use_cache and not self.training
        if use_cache and past_key_values is None:
            past_key_values = EncoderDecoderCache(DynamicCache(), DynamicCache())
        decoder_outputs = self.decoder(
            decoder_input_ids,
            attention_mask=decoder_attention_mask,
            encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_mask,
            past_key_values=past_key_values if use_cache else None,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        output = Seq2SeqModelOutput(
            last_hidden_state=decoder_outputs.last_hidden_state,
            past_key_values=decoder_outputs.past_key_values,
            decoder_hidden_states=decoder_outputs.hidden_states,
            decoder_attentions=decoder_outputs.attentions,
            cross_attentions=decoder_outputs.cross_attentions,
            encoder_last_hidden_state=encoder_hidden_states,
            encoder_hidden_states=encoder_outputs.hidden_states,
            encoder_attentions=encoder_outputs.attentions,
        )
        return output if return_dict is not False else output.to_tuple()


class SpeechSeqForConditionalGeneration(SpeechSeqPreTrainedModel, GenerationMixin):
    r"""
    The speechseq ASR model: [`SpeechSeqModel`], an output layer tied to the token embedding, and a CTC head on the
    encoder. Trained with `loss = (1 - ctc_weight) * label-smoothed cross-entropy + ctc_weight * CTC`.

    Example:

    ```python
    >>> import torch
    >>> from speechseq import SpeechSeqConfig, SpeechSeqForConditionalGeneration
    >>> model = SpeechSeqForConditionalGeneration(SpeechSeqConfig.from_preset("tiny", vocab_size=40)).eval()
    >>> features = torch.randn(2, 100, 80)  # (batch, frames, mel bins)
    >>> labels = torch.tensor([[7, 8, 9, 4], [10, 4, -100, -100]])  # [EOS]=4 ends each, -100 pads
    >>> out = model(features, labels=labels)
    >>> out.logits.shape, out.ctc_logits.shape
    (torch.Size([2, 4, 40]), torch.Size([2, 24, 40]))
    >>> model.generate(features, max_new_tokens=5).shape[0]
    2
    ```
    """

    _tied_weights_keys = {"lm_head.weight": "model.decoder.embed_tokens.weight"}

    def __init__(self, config: SpeechSeqConfig):
        super().__init__(config)
        self.model = SpeechSeqModel(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.ctc_head = nn.Linear(config.d_model, config.vocab_size)
        self.post_init()

    def generate(self, input_features=None, attention_mask=None, decoding: str | None = None, **kwargs):
        """transformers' `generate` for the attention decoder, or CTC greedy decoding with `decoding="ctc"`.

        The length is capped at what the decoder holds (`max_target_positions`): the ASR pipeline asks for 256 new
        tokens whatever the model. Without a length, the cap is the length. `decoding` may also be set on
        `generation_config` (`model.generation_config.decoding = "ctc"`), which the pipeline and
        `Seq2SeqTrainer` then use.

        Returns:
            `torch.LongTensor` of shape `(batch, tokens)`: `decoder_start_token_id`, the tokens, `eos_token_id`,
            then padding (as transformers' `generate`).
        """
        if input_features is None:  # transformers' own name for the main input, as in `generate(inputs=features)`
            input_features = kwargs.pop("inputs", None)
        config = kwargs.get("generation_config") or self.generation_config
        decoding = decoding or getattr(config, "decoding", None) or "attention"
        if decoding == "ctc":
            return self._ctc_greedy(input_features, attention_mask)
        if decoding != "attention":
            raise ValueError(f"decoding must be 'attention' or 'ctc', got {decoding!r}")
        limit = self.config.max_target_positions
        max_new_tokens = kwargs.get("max_new_tokens", config.max_new_tokens)
        max_length = kwargs.get("max_length", config.max_length)
        if max_new_tokens is not None:
            kwargs["max_new_tokens"] = min(max_new_tokens, limit - 1)
        else:
            kwargs["max_length"] = limit if max_length is None else min(max_length, limit)
        return super().generate(input_features, attention_mask=attention_mask, **kwargs)

    @torch.no_grad()
    def _ctc_greedy(self, input_features, attention_mask=None) -> torch.LongTensor:
        """Best path of the CTC head: the most likely token per frame, repeats merged, blanks dropped."""
        encoder_hidden_states = self.model.encoder(input_features, attention_mask).last_hidden_state
        T = encoder_hidden_states.shape[1]
        lengths = encoder_lengths(self.config, frame_lengths(input_features, attention_mask))
        best = self.ctc_head(encoder_hidden_states).argmax(dim=-1)  # (B, frames)
        keep = (best != self.config.blank_token_id) & lengths_to_mask(lengths, T)
        keep[:, 1:] &= best[:, 1:] != best[:, :-1]  # a repeat merges with the frame before it
        sequences = [
            [self.config.decoder_start_token_id, *row[k].tolist(), self.config.eos_token_id]
            for row, k in zip(best, keep)
        ]
        width = max(map(len, sequences))
        return torch.tensor([s + [self.config.pad_token_id] * (width - len(s)) for s in sequences], device=best.device)

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def ctc_log_probs(self, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        """(B, frames, d_model) encoder output -> (B, frames, vocab) float32 CTC log-probabilities."""
        return self.ctc_head(encoder_hidden_states).float().log_softmax(dim=-1)

    def forward(
        self,
        input_features: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutput | tuple | None = None,
        past_key_values: EncoderDecoderCache | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SpeechSeqOutput:
        r"""
        Args:
            input_features (`torch.FloatTensor` of shape `(batch, frames, num_mel_bins)`): log-mel filterbanks.
            attention_mask (`torch.LongTensor` of shape `(batch, frames)`, *optional*): 1 on real frames.
            decoder_input_ids (`torch.LongTensor` of shape `(batch, tokens)`, *optional*): defaults to `labels`
                shifted right behind `decoder_start_token_id`.
            labels (`torch.LongTensor` of shape `(batch, tokens)`, *optional*): target ids ending in `[EOS]`,
                padded with -100.
            encoder_outputs, past_key_values, use_cache: as in transformers' seq2seq models (generate passes them).
        """
        ran_encoder = encoder_outputs is None
        if labels is not None and decoder_input_ids is None:
            decoder_input_ids = shift_tokens_right(labels, self.config.pad_token_id, self.config.decoder_start_token_id)
        outputs = self.model(
            input_features,
            attention_mask=attention_mask,
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask,
            encoder_outputs=encoder_outputs,
            past_key_values=past_key_values,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        logits = self.lm_head(outputs.last_hidden_state)
        encoder_hidden_states = outputs.encoder_last_hidden_state
        T = encoder_hidden_states.shape[1]
        if attention_mask is not None:
            lengths = encoder_lengths(self.config, attention_mask.sum(-1).long())
        else:
            lengths = torch.full(encoder_hidden_states.shape[:1], T, device=encoder_hidden_states.device)
        ctc_logits = self.ctc_head(encoder_hidden_states) if ran_encoder or labels is not None else None

        loss = attention_loss = ctc_loss = None
        if labels is not None:
            attention_loss = F.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]),
                labels.reshape(-1),
                ignore_index=-100,
                label_smoothing=self.config.label_smoothing,
            )
            loss = attention_loss
            if self.config.ctc_weight > 0:
                ctc_loss = self._ctc_loss(ctc_logits, lengths, labels)
                loss = (1 - self.config.ctc_weight) * attention_loss + self.config.ctc_weight * ctc_loss

        output = SpeechSeqOutput(
            loss=loss,
            logits=logits,
            past_key_values=outputs.past_key_values,
            decoder_hidden_states=outputs.decoder_hidden_states,
            decoder_attentions=outputs.decoder_attentions,
            cross_attentions=outputs.cross_attentions,
            encoder_last_hidden_state=encoder_hidden_states,
            encoder_hidden_states=outputs.encoder_hidden_states,
            encoder_attentions=outputs.encoder_attentions,
            attention_loss=attention_loss,
            ctc_loss=ctc_loss,
            ctc_logits=ctc_logits,
            encoder_output_lengths=lengths,
        )
        return output if return_dict is not False else output.to_tuple()

    def _ctc_loss(self, ctc_logits, lengths, labels):
        # CTC targets are the transcript tokens alone: no padding, [SOS]/[EOS] or blank.
        special = torch.tensor(
            [self.config.pad_token_id, self.config.bos_token_id, self.config.eos_token_id, self.config.blank_token_id],
            device=labels.device,
        )
        keep = (labels >= 0) & ~torch.isin(labels, special)
        log_probs = ctc_logits.float().log_softmax(dim=-1).transpose(0, 1)  # (T, B, vocab), as ctc_loss wants
        with torch.backends.cudnn.flags(enabled=False):  # as transformers' Wav2Vec2: cuDNN's CTC is non-deterministic
            return F.ctc_loss(
                log_probs,
                labels[keep],
                lengths,
                keep.sum(-1),
                blank=self.config.blank_token_id,
                reduction=self.config.ctc_loss_reduction,
                zero_infinity=self.config.ctc_zero_infinity,
            )


# transformers' ASR pipeline takes its seq2seq path only for classes listed here (registering with
# AutoModelForSpeechSeq2Seq does not add them). Done in this module so that remote code gets it too.
MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES.setdefault(SpeechSeqConfig.model_type, SpeechSeqForConditionalGeneration.__name__)
