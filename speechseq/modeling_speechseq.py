"""The speechseq model: a pre-norm Transformer encoder-decoder over log-mel filterbanks with an auxiliary CTC head.

Reads top to bottom: subsampling front end, attention, the two layer types, encoder, decoder, and the two
`PreTrainedModel`s. The beam search is not here: the model only exposes the encoder, a cached decoder step and CTC
log-probabilities.
"""

import functools
import logging
import math
import os
import shutil
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.audio_utils import hertz_to_mel, mel_to_hertz
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutput, BaseModelOutputWithPastAndCrossAttentions
from transformers.modeling_outputs import CausalLMOutputWithPast, Seq2SeqLMOutput, Seq2SeqModelOutput
from transformers.models.auto.modeling_auto import MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES

from .configuration_speechseq import SAMPLES_PER_FRAME, SUBSAMPLING_CONVS, SpeechSeqConfig, SpeechSeqLMConfig
from .generation_speechseq import (
    CACHE_NAME,
    SpeechSeqGenerateOutput,
    SpeechSeqGenerationMixin,
    frame_lengths,
    lengths_to_mask,
)

logger = logging.getLogger(__name__)

__all__ = [
    "SpeechSeqPreTrainedModel",
    "SpeechSeqModel",
    "SpeechSeqForConditionalGeneration",
    "SpeechSeqForCausalLM",
    "SpeechSeqOutput",
    "SpeechSeqEncoderOutput",
    "SpeechSeqGenerateOutput",
]


@dataclass
class SpeechSeqOutput(Seq2SeqLMOutput):
    r"""
    [`Seq2SeqLMOutput`] with the parts of the joint CTC/attention loss and the CTC branch.

    attention_loss (`torch.FloatTensor`, *optional*): label-smoothed cross-entropy of the decoder (with `labels`).
    ctc_loss (`torch.FloatTensor`, *optional*): CTC loss of the encoder (with `labels` and `ctc_weight > 0`).
    interctc_loss (`torch.FloatTensor`, *optional*): mean CTC loss of the intermediate layers (`interctc_layers`,
        with `labels` and `interctc_weight > 0`).
    consistency_loss (`torch.FloatTensor`, *optional*): CR-CTC's divergence between the two views' CTC posteriors
        (in training, with `labels` and `ctc_consistency_weight > 0`).
    ctc_logits (`torch.FloatTensor` of shape `(batch, encoder_frames, vocab_size)`, *optional*): CTC head output,
        computed whenever this call ran the encoder or was given `labels`.
    encoder_output_lengths (`torch.LongTensor` of shape `(batch,)`): real encoder frames of each utterance.
    """

    attention_loss: torch.FloatTensor | None = None
    ctc_loss: torch.FloatTensor | None = None
    interctc_loss: torch.FloatTensor | None = None
    consistency_loss: torch.FloatTensor | None = None
    ctc_logits: torch.FloatTensor | None = None
    encoder_output_lengths: torch.LongTensor | None = None


@dataclass
class SpeechSeqEncoderOutput(BaseModelOutput):
    r"""
    [`BaseModelOutput`] with the CTC head's logits after each of `config.interctc_layers`.

    interctc_logits (`tuple(torch.FloatTensor)`, *optional*): one `(batch, encoder_frames, vocab_size)` tensor per
        intermediate layer, when the encoder belongs to a model with a CTC head.
    """

    interctc_logits: tuple[torch.FloatTensor, ...] | None = None




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


def rotary_angles(positions: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosines and sines of rotary position embeddings (RoFormer, Su et al., 2021) for integer `positions`:
    (T,) -> two (T, dim) tensors, each frequency written twice (the rotate-half layout of GPT-NeoX and Llama)."""
    inv_freq = 10000.0 ** (-torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32) / dim)
    angles = positions.float()[:, None] * inv_freq  # (T, dim / 2)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def rotate(x: torch.Tensor, angles: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotate each channel pair (i, i + dim/2) of `x` (B, heads, T, dim) by its position's angle."""
    cos, sin = (a.to(x.dtype) for a in angles)
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


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


def spec_augment(features: torch.Tensor, lengths: torch.Tensor, config: SpeechSeqConfig) -> torch.Tensor:
    """SpecAugment (Park et al., 2019) without time warping: zero `spec_augment_freq_masks` bands of up to
    `spec_augment_freq_width` mel bins and `spec_augment_time_masks` spans of up to `spec_augment_time_width` frames
    (at most a fifth of the utterance), all inside each utterance's real frames. (B, T, F) -> (B, T, F). Frequency
    masks fall on the log-mels only (the first `num_mel_bins` values of a frame), time masks on all its values."""
    B, T, size = features.shape
    device = features.device
    num_bins = 0 if config.input_mode == "waveform" else config.num_mel_bins
    real = lengths_to_mask(lengths, T)  # (B, T)
    masked = torch.zeros(B, T, size, dtype=torch.bool, device=device)
    bins, frames = torch.arange(size, device=device), torch.arange(T, device=device)
    for _ in range(config.spec_augment_freq_masks if num_bins else 0):
        width = (torch.rand(B, device=device) * (config.spec_augment_freq_width + 1)).long()
        start = (torch.rand(B, device=device) * (num_bins - width + 1)).long()
        masked |= ((bins >= start[:, None]) & (bins < (start + width)[:, None]))[:, None, :]
    longest = torch.clamp(lengths // 5, max=config.spec_augment_time_width)
    for _ in range(config.spec_augment_time_masks):
        width = (torch.rand(B, device=device) * (longest + 1)).long()
        start = (torch.rand(B, device=device) * (lengths - width + 1)).long()
        masked |= ((frames >= start[:, None]) & (frames < (start + width)[:, None]))[:, :, None]
    return features.masked_fill(masked & real[..., None], 0.0)


@functools.lru_cache(maxsize=4)
def _mel_centres(num_bins: int, mel_scale: str, low: float, high: float) -> np.ndarray:
    """The centre frequencies (Hz) of a filterbank's `num_bins` triangles, equally spaced in `mel_scale`."""
    mels = np.linspace(hertz_to_mel(low, mel_scale), hertz_to_mel(high, mel_scale), num_bins + 2)[1:-1]
    return mel_to_hertz(mels, mel_scale)


def vtlp(features: torch.Tensor, lengths: torch.Tensor, config: SpeechSeqConfig,
         factors: torch.Tensor | None = None) -> torch.Tensor:
    """Vocal-tract-length perturbation (Jaitly & Hinton, 2013) on log-mels: each utterance's frequency axis warped
    by a factor `a` drawn from `[1 - config.vtlp_warp, 1 + config.vtlp_warp]`, piecewise linearly as Kaldi's VTLN
    does (below 80% of the Nyquist frequency a frequency `f` of the output reads the input at `f / a`; above, the
    line that keeps the Nyquist frequency where it is), each mel bin read from the input's mel axis by linear
    interpolation between its neighbours. The bins' centres are those of the model's features: Kaldi's filterbank
    (20 Hz to 8 kHz) or, for a Whisper encoder, Whisper's Slaney log-mels (0 to 8 kHz). Only the log-mels (the first
    `num_mel_bins` values of a frame) of real frames change. (B, T, F) -> (B, T, F); `factors` (B,) replace the
    drawn ones."""
    B, T, _ = features.shape
    bins = config.num_mel_bins
    scale, low = ("slaney", 0.0) if config.encoder_type == "whisper" else ("kaldi", 20.0)
    nyquist = 8000.0  # the features' 16 kHz
    centres = _mel_centres(bins, scale, low, nyquist)
    if factors is None:  # drawn on the CPU, where the positions are computed
        factors = 1.0 + (2.0 * torch.rand(B, dtype=torch.float64) - 1.0) * config.vtlp_warp
    knee = 0.8 * nyquist
    f = torch.from_numpy(centres)[None, :]  # (1, bins)
    a = torch.as_tensor(factors, dtype=torch.float64).cpu()[:, None]
    source = torch.where(f <= knee, f / a, knee / a + (f - knee) * (nyquist - knee / a) / (nyquist - knee))
    positions = np.interp(source.numpy(), centres, np.arange(bins, dtype=np.float64))  # fractional bins, clamped
    positions = torch.from_numpy(positions).to(features.device, torch.float32)  # (B, bins)
    below = positions.floor().long().clamp(max=bins - 1)
    above = (below + 1).clamp(max=bins - 1)
    weight = (positions - below).to(features.dtype)[:, None, :]
    x = features[..., :bins]
    gather = lambda index: x.gather(-1, index[:, None, :].expand(B, T, bins))  # noqa: E731
    warped = gather(below) * (1 - weight) + gather(above) * weight
    real = lengths_to_mask(lengths, T)[..., None]
    return torch.cat([torch.where(real, warped, x), features[..., bins:]], dim=-1)


class ConvSubsampling(nn.Module):
    """Strided convolutions that divide the frame rate by `subsampling_factor`, then a linear map to `d_model`;
    optionally a BiLSTM. `"conv2d"` convolves (time, frequency) images with `subsampling_channels` maps (ESPnet);
    `"conv1d"` convolves along time with the mel bins as channels (Speech2Text, Whisper). Both give the same number
    of frames (`subsampled_lengths`)."""

    def __init__(self, config: SpeechSeqConfig):
        super().__init__()
        self.two_d = config.subsampling == "conv2d"
        channels, freq = config.subsampling_channels, config.num_mel_bins  # mel bins, or the waveform's filters
        self.convs = nn.ModuleList()
        for i, (kernel, stride) in enumerate(SUBSAMPLING_CONVS[config.subsampling_factor]):
            if self.two_d:
                self.convs.append(nn.Conv2d(1 if i == 0 else channels, channels, kernel, stride))
                freq = (freq - kernel) // stride + 1
            else:
                self.convs.append(nn.Conv1d(freq if i == 0 else channels, channels, kernel, stride))
        self.out = nn.Linear(channels * freq if self.two_d else channels, config.d_model)
        self.lstm = (
            nn.LSTM(config.d_model, config.d_model // 2, batch_first=True, bidirectional=True)
            if config.subsampling_lstm
            else None
        )

    def forward(self, input_features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = input_features.unsqueeze(1) if self.two_d else input_features.transpose(1, 2)  # (B, 1, T, F) / (B, F, T)
        for conv in self.convs:
            x = F.relu(conv(x))  # (B, C, T', F') / (B, C, T')
        if self.two_d:
            B, C, T, Fr = x.shape
            x = x.transpose(1, 2).reshape(B, T, C * Fr)
        else:
            x = x.transpose(1, 2)
        x = self.out(x)  # (B, T', d_model)
        if self.lstm is not None:
            # Packed, so padding never flows backwards into an utterance's real frames.
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            x, _ = nn.utils.rnn.pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=x.shape[1])
        return x


class WaveformSubsampling(nn.Module):
    """The waveform front end of the "Echo" variants: a learned filterbank, `num_mel_bins` convolution filters over a
    25 ms window with a 10 ms hop (wav2vec's strided waveform encoder, in one layer), so that it gives the log-mel
    frames' count and timing exactly; then a [`ConvSubsampling`] of its own. Takes (B, T, 160) blocks of samples, a
    frame's hop each."""

    def __init__(self, config: SpeechSeqConfig):
        super().__init__()
        self.filters = nn.Conv1d(1, config.num_mel_bins, kernel_size=400, stride=SAMPLES_PER_FRAME)
        self.norm = nn.LayerNorm(config.num_mel_bins, eps=config.layer_norm_eps)
        self.subsampling = ConvSubsampling(config)

    def forward(self, blocks: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        B, T, hop = blocks.shape
        # Frame t's window is samples [160 t, 160 t + 400): the waveform, with 240 zeros after the last hop.
        waveform = F.pad(blocks.reshape(B, 1, T * hop), (0, 400 - hop))  # (B, 1, 160 T + 240)
        x = self.norm(F.gelu(self.filters(waveform)).transpose(1, 2))  # (B, T, num_mel_bins)
        return self.subsampling(x, lengths)


class SpeechSeqAttention(nn.Module):
    """Multi-head attention, as `config._attn_implementation` says (`attn_implementation=` in `from_pretrained` and
    `from_config`, or `model.set_attn_implementation`): `"sdpa"` (the default) through torch's
    `scaled_dot_product_attention`, `"eager"` explicitly; the explicit path also serves `output_attentions` under
    SDPA (it returns the weights) and the soft mask. A causal attention (`is_causal`, the decoder's self-attention)
    given no mask makes its own, so that a batch without padding takes SDPA's fused causal kernels.

    Masks are boolean, broadcastable to (B, heads, T_query, T_key), True where a query may attend: masked logits
    become -inf, or with `soft_mask` (the experimental "soft" mode) are multiplied by 1e-6. In
    cross-attention, `key_value_states` (or the cached keys and values) may have fewer rows than the queries: then each
    of them serves a group of consecutive query rows (the beams of one utterance), which beam search uses to keep one
    copy of the encoder's keys and values per utterance instead of one per beam; the mask then has their rows.
    """

    def __init__(self, config, num_heads: int, layer_idx: int | None = None, is_causal: bool = False):
        super().__init__()
        d_model, self.config = config.d_model, config
        self.num_heads, self.head_dim, self.layer_idx = num_heads, d_model // num_heads, layer_idx
        self.dropout, self.is_causal = config.attention_dropout, is_causal
        self.soft_mask = config.attention_mask_mode == "soft"
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(*x.shape[:2], self.num_heads, self.head_dim).transpose(1, 2)  # (B, heads, T, head_dim)

    def forward(self, x, key_value_states=None, mask=None, cache=None, output_attentions=False, rotary=None):
        """`rotary`: the (cos, sin) of this call's query positions (`rotary_angles`), in self-attention only."""
        q = self._heads(self.q_proj(x))
        if key_value_states is None:  # self-attention: append this step's keys and values to the cache
            k, v = self._heads(self.k_proj(x)), self._heads(self.v_proj(x))
            if rotary is not None:  # keys are cached rotated, each by its own position
                q, k = rotate(q, rotary), rotate(k, rotary)
            if cache is not None:  # an EncoderDecoderCache, or the language model's DynamicCache
                self_attention_cache = getattr(cache, "self_attention_cache", cache)
                k, v = self_attention_cache.update(k, v, self.layer_idx)
        elif cache is not None and cache.is_updated.get(self.layer_idx):
            # cross-attention: the encoder's keys and values are projected once per utterance, then reused
            layer = cache.cross_attention_cache.layers[self.layer_idx]
            k, v = layer.keys, layer.values
        else:
            k, v = self._heads(self.k_proj(key_value_states)), self._heads(self.v_proj(key_value_states))
            if cache is not None:
                k, v = cache.cross_attention_cache.update(k, v, self.layer_idx)
                cache.is_updated[self.layer_idx] = True

        rows, queries = q.shape[0], q.shape[2]
        group = rows // k.shape[0]
        if group > 1:  # (U * group, heads, T_query, head_dim) -> (U, heads, group * T_query, head_dim)
            q = q.unflatten(0, (-1, group)).transpose(1, 2).flatten(2, 3)
        dropout = self.dropout if self.training else 0.0
        causal = self.is_causal and mask is None and queries > 1
        eager = output_attentions or self.soft_mask or self.config._attn_implementation == "eager"
        if causal and (eager or queries != k.shape[2]):  # queries after cached keys: the last `queries` positions
            mask = torch.ones(queries, k.shape[2], dtype=torch.bool, device=q.device).tril(k.shape[2] - queries)
            causal = False
        if eager:
            scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # (B, heads, T_query, T_key)
            if mask is not None and self.soft_mask:
                scores = torch.where(mask, scores, scores * 1e-6)
            elif mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            weights = F.dropout(scores.softmax(dim=-1), dropout, self.training)
            y = weights @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal)
            weights = None
        if group > 1:
            y = y.unflatten(2, (group, queries)).transpose(1, 2).flatten(0, 1)
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
        self.self_attn = SpeechSeqAttention(config, config.encoder_attention_heads)
        self.final_layer_norm = nn.LayerNorm(d, eps=eps)
        self.mlp = FeedForward(d, config.encoder_ffn_dim, config.activation_function, config.activation_dropout)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, mask=None, output_attentions=False, rotary=None):
        h, weights = self.self_attn(self.self_attn_layer_norm(x), mask=mask, output_attentions=output_attentions,
                                    rotary=rotary)  # fmt: skip
        x = x + self.dropout(h)
        x = x + self.dropout(self.mlp(self.final_layer_norm(x)))
        return x, weights


class ConformerConvolution(nn.Module):
    """The Conformer's convolution module (Gulati et al., 2020): pointwise conv + GLU, depthwise conv over time,
    LayerNorm or BatchNorm, Swish, pointwise conv. Padding frames are zeroed before the depthwise convolution, so an
    utterance in a padded batch sees exactly the zeros it would see alone. The pointwise convolutions are `Linear`
    layers (the same map), initialised as every other projection (not with the subsampling convolutions' He
    initialisation), so that the block starts close to the identity, as the Transformer block does."""

    def __init__(self, config: SpeechSeqConfig):
        super().__init__()
        d, kernel = config.d_model, config.conv_kernel_size
        self.pointwise_in = nn.Linear(d, 2 * d)
        self.depthwise = nn.Conv1d(d, d, kernel, padding=kernel // 2, groups=d)
        self.layer_norm = config.conv_norm == "layer_norm"
        self.norm = nn.LayerNorm(d, eps=config.layer_norm_eps) if self.layer_norm else nn.BatchNorm1d(d)
        self.pointwise_out = nn.Linear(d, d)

    def forward(self, x: torch.Tensor, frames: torch.Tensor | None) -> torch.Tensor:
        """x (B, T, d_model); frames (B, T) bool, True on real frames, or None without padding."""
        x = F.glu(self.pointwise_in(x), dim=-1)  # (B, T, d_model)
        if frames is not None:
            x = x.masked_fill(~frames[..., None], 0.0)
        x = self.depthwise(x.transpose(1, 2))  # (B, d_model, T)
        x = self.norm(x.transpose(1, 2)) if self.layer_norm else self.norm(x).transpose(1, 2)  # (B, T, d_model)
        return self.pointwise_out(F.silu(x))


class ConformerLayer(GradientCheckpointingLayer):
    """Pre-norm Conformer block: x + FF/2, + SelfAttention, + Convolution, + FF/2 (each on LN(x)), then LayerNorm."""

    def __init__(self, config: SpeechSeqConfig):
        super().__init__()
        d, eps, ffn = config.d_model, config.layer_norm_eps, config.encoder_ffn_dim
        self.ffn_in_layer_norm = nn.LayerNorm(d, eps=eps)
        self.ffn_in = FeedForward(d, ffn, "swish", config.activation_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(d, eps=eps)
        self.self_attn = SpeechSeqAttention(config, config.encoder_attention_heads)
        self.conv_layer_norm = nn.LayerNorm(d, eps=eps)
        self.conv = ConformerConvolution(config)
        self.ffn_out_layer_norm = nn.LayerNorm(d, eps=eps)
        self.ffn_out = FeedForward(d, ffn, "swish", config.activation_dropout)
        self.final_layer_norm = nn.LayerNorm(d, eps=eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, mask=None, output_attentions=False, rotary=None):
        x = x + 0.5 * self.dropout(self.ffn_in(self.ffn_in_layer_norm(x)))  # macaron: half-step feed-forwards
        h, weights = self.self_attn(self.self_attn_layer_norm(x), mask=mask, output_attentions=output_attentions,
                                    rotary=rotary)  # fmt: skip
        x = x + self.dropout(h)
        x = x + self.dropout(self.conv(self.conv_layer_norm(x), None if mask is None else mask[:, 0, 0, :]))
        x = x + 0.5 * self.dropout(self.ffn_out(self.ffn_out_layer_norm(x)))
        return self.final_layer_norm(x), weights


class SpeechSeqDecoderLayer(GradientCheckpointingLayer):
    """Pre-norm: causal self-attention, cross-attention over the encoder (unless `cross_attention=False`, as in
    the decoder-only language model), feed-forward; each as x + Block(LN(x))."""

    def __init__(self, config: SpeechSeqConfig, layer_idx: int, cross_attention: bool = True):
        super().__init__()
        d, eps, heads = config.d_model, config.layer_norm_eps, config.decoder_attention_heads
        self.self_attn_layer_norm = nn.LayerNorm(d, eps=eps)
        self.self_attn = SpeechSeqAttention(config, heads, layer_idx, is_causal=True)
        if cross_attention:
            self.encoder_attn_layer_norm = nn.LayerNorm(d, eps=eps)
            self.encoder_attn = SpeechSeqAttention(config, heads, layer_idx)
        self.final_layer_norm = nn.LayerNorm(d, eps=eps)
        self.mlp = FeedForward(d, config.decoder_ffn_dim, config.activation_function, config.activation_dropout)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x,
        self_mask=None,
        encoder_hidden_states=None,
        encoder_mask=None,
        cache=None,
        output_attentions=False,
        rotary=None,
    ):
        h, self_weights = self.self_attn(
            self.self_attn_layer_norm(x), mask=self_mask, cache=cache,
            output_attentions=output_attentions, rotary=rotary,
        )  # fmt: skip
        x = x + self.dropout(h)
        cross_weights = None
        if encoder_hidden_states is not None:
            h, cross_weights = self.encoder_attn(
                self.encoder_attn_layer_norm(x), key_value_states=encoder_hidden_states, mask=encoder_mask,
                cache=cache, output_attentions=output_attentions,
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
    _no_split_modules = ["SpeechSeqEncoderLayer", "ConformerLayer", "SpeechSeqDecoderLayer", "WhisperEncoderLayer"]
    _supports_sdpa = True
    # The loss is a mean over the batch's tokens (and utterances, for CTC); it takes no `num_items_in_batch`. Without
    # this, the Trainer sees `**kwargs` in forward and multiplies the loss by the number of processes.
    accepts_loss_kwargs = False

    @classmethod
    def _can_set_attn_implementation(cls) -> bool:
        """`set_attn_implementation("eager" | "sdpa")` works on a built model: every attention reads
        `config._attn_implementation` when it runs. (transformers guesses this from the source, looking for its own
        attention registry, which speechseq's two implementations do not need.)"""
        return True

    def _init_weights(self, module):
        if isinstance(module, (nn.Conv1d, nn.Conv2d)):
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


def whisper_encoder(config: SpeechSeqConfig) -> nn.Module:
    """transformers' `WhisperEncoder` of `config.whisper_encoder`'s shape (weights from `from_whisper`)."""
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    return WhisperEncoder(WhisperConfig(**config.whisper_encoder))


def run_whisper_encoder(whisper: nn.Module, features: torch.Tensor, lengths: torch.Tensor, out_lengths: torch.Tensor,
                        layer_weights: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """A `WhisperEncoder`'s layers on (B, T, mel bins) features of `lengths` real frames, without padding them to 30 s
    (its own forward insists on 3000 frames): the position table cut to the frames there are, as whisper.cpp's
    `audio_ctx` does, and padding masked. The convolutions are padded by one frame on each side; zeroing the frames
    past each utterance's end, before each, makes a padded batch give what each utterance alone gives.

    With `layer_weights` (one logit per layer, plus one), the softmax-weighted sum of each layer's input, normalised
    per frame without learnt scales, and the final normed output; else the final output alone."""
    B, T, _ = features.shape
    real = lengths_to_mask(lengths, T)[:, None, :].to(features.dtype)  # (B, 1, T)
    x = F.gelu(whisper.conv1(features.transpose(1, 2) * real)) * real
    x = F.gelu(whisper.conv2(x)).transpose(1, 2)  # (B, T', d)
    x = x + whisper.embed_positions.weight[: x.shape[1]].to(x.dtype)
    keep = lengths_to_mask(out_lengths, x.shape[1])[:, None, None, :]
    mask = torch.zeros(keep.shape, dtype=x.dtype, device=x.device).masked_fill(~keep, torch.finfo(x.dtype).min)
    states = []
    for layer in whisper.layers:
        if layer_weights is not None:
            states.append(F.layer_norm(x, x.shape[-1:], eps=whisper.layer_norm.eps))
        x = layer(x, mask)
        x = x[0] if isinstance(x, tuple) else x  # a tuple before transformers 5.24
    x = whisper.layer_norm(x)
    if layer_weights is None:
        return x
    weights = layer_weights.softmax(dim=0).to(x.dtype)
    return torch.einsum("l,lbtd->btd", weights, torch.stack([*states, x]))


class SpeechSeqEncoder(nn.Module):
    """Subsampling plus positions (sinusoids added, or rotary in self-attention), pre-norm Transformer or Conformer
    layers, final LayerNorm; intermediate CTC and self-conditioning after `config.interctc_layers`. With
    `encoder_type="whisper"`, a pretrained Whisper encoder takes the place of subsampling and positions."""

    def __init__(self, config: SpeechSeqConfig):
        super().__init__()
        self.config = config
        if config.encoder_type == "whisper":
            self.whisper = whisper_encoder(config)
            if config.whisper_encoder["d_model"] != config.d_model:
                self.whisper_projection = nn.Linear(config.whisper_encoder["d_model"], config.d_model)
            if config.use_weighted_layer_sum:  # equal at first; not under `whisper`, so that freezing it spares them
                self.layer_weights = nn.Parameter(torch.zeros(config.whisper_encoder["encoder_layers"] + 1))
        elif config.input_mode in ("fbank", "fusion"):
            self.subsampling = ConvSubsampling(config)
        if config.input_mode in ("waveform", "fusion"):
            self.waveform_subsampling = WaveformSubsampling(config)
        if config.input_mode == "fusion":  # the weight of the filterbank front end, sigmoid(0) = 0.5 at first
            self.fusion_logit = nn.Parameter(torch.zeros(()))
        block = ConformerLayer if config.encoder_block == "conformer" else SpeechSeqEncoderLayer
        self.layers = nn.ModuleList([block(config) for _ in range(config.encoder_layers)])
        self.layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)
        if config.self_conditioning:  # posteriors back to the model width, one map for every intermediate layer
            self.conditioning = nn.Linear(config.vocab_size, config.d_model)
        self._ctc_head = ()
        self.gradient_checkpointing = False

    def attach_ctc_head(self, ctc_head: nn.Module) -> None:
        """The CTC head that intermediate CTC and self-conditioning use: the model's own, shared. Kept as a plain
        reference, not a submodule, so that its weights are stored once, as the model's `ctc_head`."""
        self._ctc_head = (ctc_head,)

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
            input_features (`torch.FloatTensor` of shape `(batch, frames, config.input_size)`): log-mel filterbanks,
                waveform blocks or both, as `config.input_mode` says.
            attention_mask (`torch.LongTensor` of shape `(batch, frames)`, *optional*): 1 on real frames.
        """
        if input_features.dim() != 3 or input_features.shape[-1] != self.config.input_size:
            raise ValueError(
                f"input_features must have shape (batch, frames, {self.config.input_size}) for input_mode "
                f"{self.config.input_mode!r}, got {tuple(input_features.shape)}; the feature extractor's input_mode "
                "must be the model's"
            )
        lengths = frame_lengths(input_features, attention_mask)
        out_lengths = encoder_lengths(self.config, lengths)
        if self.training and self.config.vtlp_warp and self.config.input_mode != "waveform":
            input_features = vtlp(input_features, lengths, self.config)
        if self.training and (self.config.spec_augment_freq_masks or self.config.spec_augment_time_masks):
            input_features = spec_augment(input_features, lengths, self.config)
        T = int(encoder_lengths(self.config, torch.tensor([input_features.shape[1]])))
        if T > self.config.max_source_positions:
            raise ValueError(
                f"input of {input_features.shape[1]} frames gives {T} encoder frames, more than "
                f"max_source_positions={self.config.max_source_positions}; split the audio into chunks"
            )
        x = self._front_end(input_features, lengths, out_lengths)
        # No sqrt(d_model) scaling here (unlike token embeddings): He-initialised convolutions already give unit-scale
        # frames, on a par with the positions (as in Whisper).
        positions, rotary = torch.arange(T, device=x.device), None
        if self.config.position_embedding == "rotary":
            rotary = rotary_angles(positions, self.config.d_model // self.config.encoder_attention_heads)
        elif self.config.encoder_type != "whisper":  # a Whisper encoder's frames carry its positions already
            x = x + sinusoids(positions, x.shape[-1]).to(x.dtype)
        x = self.dropout(x)
        # no mask where nothing is padded, so that SDPA may take its fused kernels
        padded = attention_mask is not None and bool((out_lengths < T).any())
        mask = lengths_to_mask(out_lengths, T)[:, None, None, :] if padded else None
        hidden_states, attentions, interctc_logits = [], [], []
        intermediate = set(self.config.interctc_layers) if self._ctc_head else set()
        if self.config.self_conditioning and not self._ctc_head:
            raise ValueError("self_conditioning needs the model's CTC head: use SpeechSeqForConditionalGeneration")
        # all layers, unless progressive training says fewer
        for i, layer in enumerate(self.layers[: self.config.active_encoder_layers], start=1):
            hidden_states.append(x)
            x, weights = layer(x, mask, output_attentions, rotary)
            attentions.append(weights)
            if i in intermediate:  # intermediate CTC (Lee & Watanabe, 2021), on the final norm as ESPnet does
                logits = self._ctc_head[0](self.layer_norm(x))
                interctc_logits.append(logits)
                if self.config.self_conditioning:  # Nozaki & Komatsu, 2021
                    x = x + self.conditioning(logits.softmax(dim=-1))
        x = self.layer_norm(x)
        hidden_states.append(x)
        return SpeechSeqEncoderOutput(
            last_hidden_state=x,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
            interctc_logits=tuple(interctc_logits) if interctc_logits else None,
        )


    def _front_end(self, input_features: torch.Tensor, lengths: torch.Tensor, out_lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, input_size) -> (B, T', d_model) through the front end(s) of `config.input_mode`, or the Whisper
        encoder."""
        mode, bins = self.config.input_mode, self.config.num_mel_bins
        if self.config.encoder_type == "whisper":
            x = run_whisper_encoder(self.whisper, input_features, lengths, out_lengths,
                                    getattr(self, "layer_weights", None))
            return self.whisper_projection(x) if hasattr(self, "whisper_projection") else x
        if mode == "fbank":
            return self.subsampling(input_features, out_lengths)
        if mode == "waveform":
            return self.waveform_subsampling(input_features, out_lengths)
        weight = torch.sigmoid(self.fusion_logit)
        fbank = self.subsampling(input_features[..., :bins], out_lengths)
        return weight * fbank + (1 - weight) * self.waveform_subsampling(input_features[..., bins:], out_lengths)


class SpeechSeqDecoder(nn.Module):
    """Token embedding (scaled) plus positions (sinusoids added, or rotary in self-attention), pre-norm layers, final
    LayerNorm."""

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
        cache: EncoderDecoderCache | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> BaseModelOutputWithPastAndCrossAttentions:
        """
        Args:
            input_ids (`torch.LongTensor` of shape `(batch, tokens)`): this step's tokens (only the new ones when
                `cache` holds the earlier ones).
            attention_mask (`torch.Tensor` of shape `(batch, past + tokens)`, *optional*): 1 on real tokens.
            encoder_hidden_states (`torch.FloatTensor` of shape `(batch, frames, d_model)`, *optional*).
            encoder_attention_mask (`torch.BoolTensor` of shape `(batch, frames)`, *optional*): True on real frames.
            cache (`EncoderDecoderCache`, or `DynamicCache` without cross-attention, *optional*): updated in place.
        """
        past = cache.get_seq_length() if cache is not None else 0
        T = input_ids.shape[1]
        if past + T > self.config.max_target_positions:
            raise ValueError(
                f"decoding {past + T} tokens exceeds max_target_positions={self.config.max_target_positions}"
            )
        positions = torch.arange(past, past + T, device=input_ids.device)
        x = self.embed_tokens(input_ids) * math.sqrt(self.config.d_model)
        rotary = None
        if self.config.position_embedding == "rotary":
            rotary = rotary_angles(positions, self.config.d_model // self.config.decoder_attention_heads)
        else:
            x = x + sinusoids(positions, x.shape[-1]).to(x.dtype)
        x = self.dropout(x)

        self_mask = None  # (B, 1, T, past + T) where tokens are padded: causal and padding; else attention's own
        if attention_mask is not None and not attention_mask.bool().all():
            self_mask = attention_mask.bool()[:, None, None, :]
            if T > 1:
                self_mask = self_mask & torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(past)
        cross_mask = None if encoder_attention_mask is None else encoder_attention_mask[:, None, None, :]

        hidden_states, self_attentions, cross_attentions = [], [], []
        # all layers, unless progressive training says fewer (the language model's config has no such field)
        for layer in self.layers[: getattr(self.config, "active_decoder_layers", None)]:
            hidden_states.append(x)
            x, self_weights, cross_weights = layer(
                x, self_mask, encoder_hidden_states, cross_mask, cache, output_attentions, rotary
            )
            self_attentions.append(self_weights)
            cross_attentions.append(cross_weights)
        x = self.layer_norm(x)
        hidden_states.append(x)
        return BaseModelOutputWithPastAndCrossAttentions(
            last_hidden_state=x,
            **{CACHE_NAME: cache},
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            attentions=tuple(self_attentions) if output_attentions else None,
            cross_attentions=tuple(cross_attentions) if output_attentions and encoder_hidden_states is not None else None,
        )


def encoder_lengths(config: SpeechSeqConfig, lengths: torch.Tensor) -> torch.LongTensor:
    if config.encoder_type == "whisper":  # kernel 3, padding 1, then the same with stride 2
        if (lengths < 1).any():
            raise ValueError("an input has no frames: the Whisper encoder needs at least one")
        return (lengths - 1) // 2 + 1
    too_short = lengths < config.min_input_frames
    if too_short.any():
        raise ValueError(
            f"input of {lengths[too_short].min().item()} frames is too short: the subsampling front end "
            f"(factor {config.subsampling_factor}) needs at least {config.min_input_frames} frames"
        )
    return subsampled_lengths(lengths, config.subsampling_factor)


def output_options(config, output_attentions, output_hidden_states, return_dict) -> tuple[bool, bool, bool]:
    """The call's `output_attentions`, `output_hidden_states` and `return_dict`, each falling back to the config's
    when not given (`None`), as transformers' models do."""
    return (
        config.output_attentions if output_attentions is None else output_attentions,
        config.output_hidden_states if output_hidden_states is None else output_hidden_states,
        getattr(config, "return_dict", True) if return_dict is None else return_dict,
    )


def cache_argument(cache, kwargs: dict):
    """The key/value cache a forward was given: as `cache` (transformers >= 5.24) or as `past_key_values` (before),
    which is taken out of `kwargs`."""
    legacy = kwargs.pop("past_key_values", None)
    if cache is not None and legacy is not None:
        raise ValueError("the cache was given twice, as `cache` and as `past_key_values`: give it once")
    if legacy is not None and CACHE_NAME == "cache":  # the installed transformers has the new name: say so
        warnings.warn("`past_key_values` is deprecated: pass the key/value cache as `cache` (its name since "
                      "transformers 5.24)", FutureWarning, stacklevel=3)  # fmt: skip
    return cache if cache is not None else legacy


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
        cache: EncoderDecoderCache | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> Seq2SeqModelOutput:
        """`cache`: the key/value cache, also accepted as `past_key_values` (its name before transformers 5.24)."""
        cache = cache_argument(cache, kwargs)
        output_attentions, output_hidden_states, return_dict = output_options(
            self.config, output_attentions, output_hidden_states, return_dict
        )
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
        if not use_cache:
            cache = None
        elif cache is None:
            cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        decoder_outputs = self.decoder(
            decoder_input_ids,
            attention_mask=decoder_attention_mask,
            encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_mask,
            cache=cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        output = Seq2SeqModelOutput(
            last_hidden_state=decoder_outputs.last_hidden_state,
            **{CACHE_NAME: cache},
            decoder_hidden_states=decoder_outputs.hidden_states,
            decoder_attentions=decoder_outputs.attentions,
            cross_attentions=decoder_outputs.cross_attentions,
            encoder_last_hidden_state=encoder_hidden_states,
            encoder_hidden_states=encoder_outputs.hidden_states,
            encoder_attentions=encoder_outputs.attentions,
        )
        return output if return_dict else output.to_tuple()




class SpeechSeqForConditionalGeneration(SpeechSeqPreTrainedModel, SpeechSeqGenerationMixin):
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
        self.model.encoder.attach_ctc_head(self.ctc_head)
        self._loaded = {}  # what generate() loads by path, once: fusion and n-gram LMs, the model's own tokenizer
        self.post_init()
        # A generation config marked as derived from the model config loses every field transformers does not know
        # when it is loaded again: ours (ctc_weight, lm_weight, decoding...) must survive save_pretrained.
        self.generation_config._from_model_config = False

    @classmethod
    def from_pretrained_decoder(cls, lm, config: SpeechSeqConfig, freeze_decoder: bool = True, tokenizer=None):
        r"""
        A new ASR model whose decoder starts as a trained language model (the assignment's "decoder initialised from
        a pretrained LM"): the token embedding (and so the tied output layer), every layer's self-attention,
        feed-forward and norms, and the final norm are copied from `lm`; cross-attention, the encoder and the CTC head
        start fresh.

        Args:
            lm (`SpeechSeqForCausalLM`, `str` or `os.PathLike`): the language model, or its directory
                (`examples/run_lm.py` writes one).
            config (`SpeechSeqConfig`): the ASR model's config; its decoder must have the language model's shape and
                tokens.
            freeze_decoder (`bool`, defaults to `True`): stop gradients to the copied weights (`freeze_decoder()`;
                `unfreeze` with `freeze_decoder(False)`). The training script freezes through its optimizer
                instead (`--freeze_decoder_steps`), which also works under DDP.
            tokenizer (*optional*): the ASR model's tokenizer; when given, it must equal the tokenizer saved beside
                `lm` (same tokens, same ids).

        Raises:
            ValueError: listing every difference in shape or tokens between `lm` and `config`'s decoder.

        Example:

        ```python
        >>> from speechseq import SpeechSeqConfig, SpeechSeqLMConfig, SpeechSeqForCausalLM
        >>> from speechseq import SpeechSeqForConditionalGeneration
        >>> lm = SpeechSeqForCausalLM(SpeechSeqLMConfig.from_preset("tiny", vocab_size=40))
        >>> model = SpeechSeqForConditionalGeneration.from_pretrained_decoder(
        ...     lm, SpeechSeqConfig.from_preset("tiny", vocab_size=40))
        >>> model.model.decoder.embed_tokens.weight.requires_grad
        False
        ```
        """
        lm_dir = None
        if isinstance(lm, (str, os.PathLike)):
            lm_dir, lm = lm, SpeechSeqForCausalLM.from_pretrained(lm)
        if not isinstance(lm, SpeechSeqForCausalLM):
            raise ValueError(f"the decoder can start only from a SpeechSeqForCausalLM, got {type(lm).__name__}")
        mismatches = [
            f"{name} {getattr(lm.config, name)!r} != {getattr(config, name)!r}"
            for name in ("vocab_size", "d_model", "decoder_layers", "decoder_attention_heads", "decoder_ffn_dim",
                         "activation_function", "position_embedding", "attention_mask_mode", "layer_norm_eps",
                         "tie_word_embeddings", "pad_token_id", "eos_token_id")
            if getattr(lm.config, name) != getattr(config, name)
        ]  # fmt: skip
        if lm.config.bos_token_id != config.decoder_start_token_id:
            mismatches.append(f"bos_token_id {lm.config.bos_token_id!r} != decoder_start_token_id "
                              f"{config.decoder_start_token_id!r}")  # fmt: skip
        if tokenizer is not None:
            from .tokenization_speechseq import load_tokenizer

            if lm_dir is None:
                raise ValueError("a tokenizer to check needs the language model's directory, where its tokenizer is")
            lm_vocab, vocab = load_tokenizer(lm_dir).get_vocab(), tokenizer.get_vocab()
            if lm_vocab != vocab:
                differ = sorted(set(lm_vocab.items()) ^ set(vocab.items()), key=str)[:5]
                mismatches.append(f"tokenizers differ ({len(lm_vocab)} vs {len(vocab)} tokens; e.g. {differ})")
        if mismatches:
            raise ValueError("cannot start the decoder from this language model, they differ in: " + "; ".join(mismatches))

        model = cls(config)
        missing, unexpected = model.model.decoder.load_state_dict(lm.model.state_dict(), strict=False)
        if unexpected or any(not name.startswith("layers.") or ".encoder_attn" not in name for name in missing):
            raise ValueError(f"language model weights do not map onto the decoder: missing {missing}, "
                             f"unexpected {unexpected}")  # fmt: skip
        model.lm_head.load_state_dict(lm.lm_head.state_dict())  # the embedding again when both tie them
        model.freeze_decoder(freeze_decoder)
        return model

    @classmethod
    def from_whisper(cls, whisper, config: SpeechSeqConfig, trainable_layers: int | None = None):
        r"""
        A new ASR model whose encoder starts as a pretrained Whisper encoder: transformers' `WhisperEncoder`, its
        weights copied from `whisper`; the speechseq layers above it, the CTC head and the decoder start fresh.

        Args:
            whisper (`WhisperModel`, `WhisperForConditionalGeneration`, `WhisperEncoder`, `str` or `os.PathLike`):
                the Whisper model, or where it is: a faster-whisper (CTranslate2) model directory, converted by
                [`~speechseq.whisper_conversion.convert_ctranslate2_whisper`]; or a transformers directory or Hub
                name (`"openai/whisper-tiny.en"`), through `WhisperModel.from_pretrained`.
            config (`SpeechSeqConfig`): the ASR model's config (e.g. the `"whisper-tiny"` preset); it gets
                `encoder_type="whisper"` and the Whisper encoder's shape in `whisper_encoder`, and a record of the
                source in `pretrained_encoder`.
            trainable_layers (`int`, *optional*): train only the last this many Whisper layers (0: none; see
                `freeze_whisper_encoder`); `None` trains it all.

        Raises:
            ValueError: when `whisper` is not a Whisper model, or `config` asks for a different encoder shape.

        Example:

        ```python
        >>> from transformers import WhisperConfig, WhisperModel
        >>> from speechseq import SpeechSeqConfig, SpeechSeqForConditionalGeneration
        >>> whisper = WhisperModel(WhisperConfig(d_model=64, encoder_layers=2, encoder_attention_heads=4,
        ...                                      encoder_ffn_dim=256, decoder_layers=1, decoder_attention_heads=4))
        >>> config = SpeechSeqConfig.from_preset("tiny", vocab_size=40)
        >>> model = SpeechSeqForConditionalGeneration.from_whisper(whisper, config, trainable_layers=0)
        >>> model.config.encoder_type, model.model.encoder.whisper.conv1.weight.requires_grad
        ('whisper', False)
        ```
        """
        from transformers import WhisperModel, WhisperPreTrainedModel

        from .configuration_speechseq import WHISPER_ENCODER_FIELDS

        source = None
        if isinstance(whisper, (str, os.PathLike)):
            source = str(whisper)
            if os.path.exists(os.path.join(whisper, "model.bin")):  # CTranslate2 (faster-whisper)
                from .whisper_conversion import convert_ctranslate2_whisper

                whisper = convert_ctranslate2_whisper(whisper)
            else:
                whisper = WhisperModel.from_pretrained(whisper)
        if not isinstance(whisper, WhisperPreTrainedModel):
            raise ValueError(f"from_whisper takes a Whisper model or its directory, got {type(whisper).__name__}")
        encoder = whisper if not hasattr(whisper, "get_encoder") else whisper.get_encoder()
        shape = {name: getattr(encoder.config, name) for name in WHISPER_ENCODER_FIELDS}
        if config.whisper_encoder not in (None, shape):
            raise ValueError(f"config.whisper_encoder {config.whisper_encoder} is not the shape of this Whisper "
                             f"encoder, {shape}")  # fmt: skip
        config = config.__class__.from_dict({
            **config.to_dict(), "encoder_type": "whisper", "whisper_encoder": shape,
            "max_source_positions": min(config.max_source_positions, shape["max_source_positions"]),
            "pretrained_encoder": source or config.pretrained_encoder,
        })  # fmt: skip
        model = cls(config)
        model.model.encoder.whisper.load_state_dict(encoder.state_dict())
        if trainable_layers is not None:
            model.freeze_whisper_encoder(trainable_layers)
        return model

    def freeze_whisper_encoder(self, trainable_layers: int = 0) -> None:
        """Stop gradients to the Whisper encoder but its last `trainable_layers` layers: its convolutions and
        positions always, its final LayerNorm unless layers train. Frozen layers then build no autograd graph, so a
        frozen encoder costs a forward pass only. (As transformers' `WhisperForConditionalGeneration.freeze_encoder`,
        with a depth.)"""
        if self.config.encoder_type != "whisper":
            raise ValueError("freeze_whisper_encoder needs a model with encoder_type='whisper'")
        whisper = self.model.encoder.whisper
        total = len(whisper.layers)
        if not isinstance(trainable_layers, int) or not 0 <= trainable_layers <= total:
            raise ValueError(f"trainable_layers must be an integer in [0, {total}], got {trainable_layers!r}")
        whisper.requires_grad_(False)
        for layer in whisper.layers[total - trainable_layers :]:
            layer.requires_grad_(True)
        whisper.layer_norm.requires_grad_(trainable_layers > 0)

    def decoder_lm_parameter_names(self) -> list[str]:
        """The parameters a language model provides (`from_pretrained_decoder`): the decoder but its cross-attention,
        and the output layer."""
        names = [f"model.decoder.{name}" for name, _ in self.model.decoder.named_parameters()
                 if ".encoder_attn" not in name]  # fmt: skip
        return names + [name for name, _ in self.lm_head.named_parameters(prefix="lm_head") if name not in names]

    def freeze_decoder(self, frozen: bool = True) -> None:
        """Stop (or, with `False`, restore) gradients to the weights a language model provides: all of the decoder
        but its cross-attention, which must learn to listen. (As Whisper's `freeze_encoder`.)"""
        parameters = dict(self.named_parameters(remove_duplicate=False))
        for name in self.decoder_lm_parameter_names():
            parameters[name].requires_grad_(not frozen)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """transformers' `save_pretrained`; the language models that the generation config names inside the model's
        directory (a word n-gram LM file, a fusion LM directory) are copied along, so that the saved setting stays
        valid wherever the directory goes."""
        super().save_pretrained(save_directory, *args, **kwargs)
        for name in ("ngram_lm", "lm"):
            path = getattr(self.generation_config, name, None)
            if not path or not isinstance(path, str):
                continue
            if os.path.isabs(path):
                logger.warning("generation_config.%s is an absolute path (%s): the saved model decodes as tuned only "
                               "where that path exists (examples/tune_decoding.py keeps LMs inside the model's "
                               "directory)", name, path)  # fmt: skip
                continue
            source, target = self._in_model_dir(path), os.path.join(save_directory, path)
            if os.path.exists(target) or os.path.abspath(source) == os.path.abspath(target):
                continue
            if os.path.isdir(source):
                shutil.copytree(source, target)
            elif os.path.isfile(source):
                os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
                shutil.copyfile(source, target)
                if os.path.isfile(f"{source}.vocab"):  # a KenLM binary's vocabulary (`write_binary`)
                    shutil.copyfile(f"{source}.vocab", f"{target}.vocab")

    def encode(self, input_features, attention_mask=None) -> tuple[torch.Tensor, torch.LongTensor]:
        """(batch, frames, mel) features -> the encoder's (batch, encoder_frames, d_model) output and real lengths."""
        encoder_hidden_states = self.model.encoder(input_features, attention_mask).last_hidden_state
        return encoder_hidden_states, encoder_lengths(self.config, frame_lengths(input_features, attention_mask))

    def decoder_step(self, input_ids, encoder_hidden_states, encoder_attention_mask, cache) -> torch.Tensor:
        """Next-token logits `(rows, vocab)` after `input_ids` (only the new tokens when `cache`, updated in place,
        holds the earlier ones): the cached decoder step that beam search scorers call."""
        hidden = self.model.decoder(
            input_ids, encoder_hidden_states=encoder_hidden_states, encoder_attention_mask=encoder_attention_mask,
            cache=cache,
        ).last_hidden_state  # fmt: skip
        return self.lm_head(hidden[:, -1])

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
        cache: EncoderDecoderCache | None = None,
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
            encoder_outputs, cache, use_cache: as in transformers' seq2seq models (generate passes them); the cache
                is also accepted as `past_key_values`, its name before transformers 5.24.
        """
        cache = cache_argument(cache, kwargs)
        output_attentions, output_hidden_states, return_dict = output_options(
            self.config, output_attentions, output_hidden_states, return_dict
        )
        ran_encoder = encoder_outputs is None
        if labels is not None and decoder_input_ids is None:
            decoder_input_ids = shift_tokens_right(labels, self.config.pad_token_id, self.config.decoder_start_token_id)
        two_views = self.training and ran_encoder and labels is not None and self.config.ctc_consistency_weight > 0
        if two_views:  # CR-CTC: the batch twice, each copy under its own SpecAugment masks (drawn in the encoder)
            input_features, attention_mask, labels, decoder_input_ids, decoder_attention_mask = (
                None if x is None else torch.cat([x, x])
                for x in (input_features, attention_mask, labels, decoder_input_ids, decoder_attention_mask)
            )
        if ran_encoder:  # here rather than in self.model, to keep the intermediate CTC logits
            encoder_outputs = self.model.encoder(input_features, attention_mask, output_attentions,
                                                 output_hidden_states)  # fmt: skip
        outputs = self.model(
            input_features,
            attention_mask=attention_mask,
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask,
            encoder_outputs=encoder_outputs,
            cache=cache,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.lm_head(outputs.last_hidden_state)
        encoder_hidden_states = outputs.encoder_last_hidden_state
        T = encoder_hidden_states.shape[1]
        if attention_mask is not None:
            lengths = encoder_lengths(self.config, attention_mask.sum(-1).long())
        else:
            lengths = torch.full(encoder_hidden_states.shape[:1], T, device=encoder_hidden_states.device)
        ctc_logits = self.ctc_head(encoder_hidden_states) if ran_encoder or labels is not None else None

        loss = attention_loss = ctc_loss = interctc_loss = consistency_loss = None
        if labels is not None:
            attention_loss = F.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]),
                labels.reshape(-1),
                ignore_index=-100,
                label_smoothing=self.config.label_smoothing,
            )
            loss = attention_loss
            if self.config.ctc_weight > 0:
                ctc_loss = total_ctc = self._ctc_loss(ctc_logits, lengths, labels)
                interctc_logits = getattr(encoder_outputs, "interctc_logits", None)
                if self.config.interctc_weight > 0 and interctc_logits:
                    interctc_loss = torch.stack([self._ctc_loss(x, lengths, labels) for x in interctc_logits]).mean()
                    total_ctc = (1 - self.config.interctc_weight) * ctc_loss + self.config.interctc_weight * interctc_loss
                loss = (1 - self.config.ctc_weight) * attention_loss + self.config.ctc_weight * total_ctc
                if two_views:
                    consistency_loss = self._consistency_loss(ctc_logits, lengths, labels)
                    loss = loss + self.config.ctc_weight * self.config.ctc_consistency_weight * consistency_loss

        output = SpeechSeqOutput(
            loss=loss,
            logits=logits,
            **{CACHE_NAME: getattr(outputs, CACHE_NAME)},
            decoder_hidden_states=outputs.decoder_hidden_states,
            decoder_attentions=outputs.decoder_attentions,
            cross_attentions=outputs.cross_attentions,
            encoder_last_hidden_state=encoder_hidden_states,
            encoder_hidden_states=outputs.encoder_hidden_states,
            encoder_attentions=outputs.encoder_attentions,
            attention_loss=attention_loss,
            ctc_loss=ctc_loss,
            interctc_loss=interctc_loss,
            consistency_loss=consistency_loss,
            ctc_logits=ctc_logits,
            encoder_output_lengths=lengths,
        )
        return output if return_dict else output.to_tuple()

    def _consistency_loss(self, ctc_logits, lengths, labels):
        """CR-CTC's loss over a batch of two views (its halves): KL(other view's posteriors, held fixed || this view's)
        summed over real frames and both views, per target token of both (CTC's own scale, as icefall's CR-CTC)."""
        log_probs = ctc_logits.float().log_softmax(dim=-1)
        targets = torch.cat(log_probs.detach().chunk(2)[::-1])
        divergence = F.kl_div(log_probs, targets, reduction="none", log_target=True).sum(-1)  # (2B, T)
        real = lengths_to_mask(lengths, log_probs.shape[1])
        tokens = (labels >= 0).sum().clamp(min=1)  # with [EOS], one per utterance: near enough CTC's targets
        return divergence.masked_fill(~real, 0.0).sum() / tokens

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


class SpeechSeqForCausalLM(PreTrainedModel, GenerationMixin):
    r"""
    The speechseq language model: the ASR decoder's layers without cross-attention, as a decoder-only pre-norm
    Transformer over the ASR model's tokens; the fusion LM of `SpeechSeqForConditionalGeneration.generate(lm=...)`.
    Sequences start with `[SOS]` (the ASR decoder's start token) and end with `[EOS]`.

    Example:

    ```python
    >>> import torch
    >>> from speechseq import SpeechSeqLMConfig, SpeechSeqForCausalLM
    >>> lm = SpeechSeqForCausalLM(SpeechSeqLMConfig.from_preset("tiny", vocab_size=40)).eval()
    >>> ids = torch.tensor([[3, 7, 8, 4]])  # [SOS] two tokens [EOS]
    >>> out = lm(ids, labels=ids)
    >>> out.logits.shape, out.loss.dim()
    (torch.Size([1, 4, 40]), 0)
    ```
    """

    config_class = SpeechSeqLMConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["SpeechSeqDecoderLayer"]
    _supports_sdpa = True
    accepts_loss_kwargs = False  # the loss is a mean over the batch's tokens
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: SpeechSeqLMConfig):
        super().__init__(config)
        self.model = SpeechSeqDecoder(config, cross_attention=False)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def set_input_embeddings(self, value):
        self.model.embed_tokens = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        cache: DynamicCache | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch, tokens)`): only the new tokens when `cache` holds the
                earlier ones.
            attention_mask (`torch.Tensor` of shape `(batch, past + tokens)`, *optional*): 1 on real tokens.
            labels (`torch.LongTensor` of shape `(batch, tokens)`, *optional*): usually `input_ids` with -100 on
                padding; shifted inside, as transformers' causal LMs: position t predicts label t + 1.
            cache (`DynamicCache`, *optional*): updated in place; also accepted as `past_key_values`, its name before
                transformers 5.24.
        """
        cache = cache_argument(cache, kwargs)
        output_attentions, output_hidden_states, return_dict = output_options(
            self.config, output_attentions, output_hidden_states, return_dict
        )
        if use_cache is None:
            use_cache = self.config.use_cache and not self.training
        if not use_cache:
            cache = None
        elif cache is None:
            cache = DynamicCache()
        outputs = self.model(
            input_ids,
            attention_mask=attention_mask,
            cache=cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        logits = self.lm_head(outputs.last_hidden_state)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100
            )
        output = CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            **{CACHE_NAME: cache},
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )
        return output if return_dict else output.to_tuple()


# transformers' ASR pipeline takes its seq2seq path only for classes listed here (registering with
# AutoModelForSpeechSeq2Seq does not add them). Done in this module so that remote code gets it too.
MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES.setdefault(SpeechSeqConfig.model_type, SpeechSeqForConditionalGeneration.__name__)
