import pytest

from speechseq import SpeechSeqConfig, SpeechSeqForConditionalGeneration


def test_presets_and_overrides():
    config = SpeechSeqConfig.from_preset("small", vocab_size=5000, dropout=0.2)
    assert (config.d_model, config.encoder_layers, config.dropout, config.vocab_size) == (256, 12, 0.2, 5000)
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        SpeechSeqConfig.from_preset("huge")


@pytest.mark.parametrize("vocab_size", [34, 1000, 5000, 10000])  # the assignment's char and BPE vocabularies
def test_small_preset_stays_within_the_assignments_30m_parameters(vocab_size):
    model = SpeechSeqForConditionalGeneration(SpeechSeqConfig.from_preset("small", vocab_size=vocab_size))
    assert sum(p.numel() for p in model.parameters()) <= 30_000_000


@pytest.mark.parametrize(
    "field, value",
    [
        ("d_model", 0),
        ("encoder_layers", -1),
        ("decoder_attention_heads", 3),  # does not divide d_model=256
        ("dropout", 1.5),
        ("ctc_weight", -0.1),
        ("activation_function", "tanh"),
        ("subsampling", "conv3d"),
        ("subsampling_factor", 3),
        ("ctc_loss_reduction", "none"),
        ("layer_norm_eps", 0.0),
        ("init_std", -1.0),
        ("blank_token_id", 64),  # not below vocab_size
        ("vocab_size", 2.5),
    ],
)
def test_bad_values_raise_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        SpeechSeqConfig(**{field: value})


@pytest.mark.parametrize("factor, frames", [(2, 3), (4, 7), (6, 11), (8, 15)])
def test_min_input_frames(factor, frames):
    assert SpeechSeqConfig(subsampling_factor=factor).min_input_frames == frames


def test_round_trip(tmp_path):
    config = SpeechSeqConfig.from_preset("tiny", vocab_size=40, subsampling_factor=6, subsampling_lstm=True)
    config.save_pretrained(tmp_path)
    loaded = SpeechSeqConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
