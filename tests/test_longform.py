"""Long recordings: cut at pauses found by the CTC head, decoded segment by segment, joined."""

import numpy as np
import pytest
import torch
from transformers import pipeline

from conftest import TRANSCRIPTS, tiny_model
from speechseq import SpeechSeqForConditionalGeneration
from speechseq.generation_speechseq import silence_segments, trim_pauses


def test_segments_cover_the_recording_and_cut_in_the_longest_pause():
    #          speech   pause(3)  speech  pause(5)   speech ...
    is_blank = [False] * 6 + [True] * 3 + [False] * 3 + [True] * 5 + [False] * 10
    segments = silence_segments(is_blank, max_frames=20)
    assert segments[0] == (0, 14)  # the middle of the 5-frame pause (12..16), the longest in frames 10..20
    assert [a for a, _ in segments[1:]] == [e for _, e in segments[:-1]] and segments[-1][1] == len(is_blank)
    assert all(e - a <= 20 for a, e in segments)
    # no pause at all: cut at the limit
    assert silence_segments([False] * 25, max_frames=10) == [(0, 10), (10, 20), (20, 25)]
    with pytest.raises(ValueError, match="max_frames"):
        silence_segments([True], max_frames=1)


def recording(signals, repeats, pause_seconds=0.5):
    """The test signals one after the other with pauses between them, `repeats` times: (audio, transcript)."""
    noise = np.random.default_rng(1).standard_normal(int(pause_seconds * 16000)).astype(np.float32) * 2e-3
    parts = [part for _ in range(repeats) for signal in signals for part in (signal, noise)]
    return np.concatenate(parts), " ".join(TRANSCRIPTS * repeats)


@pytest.mark.parametrize("options", [{}, {"num_beams": 3, "ctc_weight": 0.3}], ids=["greedy", "beam"])
def test_a_minute_of_audio_equals_its_segments_decoded_one_by_one(trained_dir, processor, signals, options):
    audio, _ = recording(signals, repeats=20)  # 60 s: beyond every limit of the tiny model's decoder
    model = SpeechSeqForConditionalGeneration.from_pretrained(trained_dir).eval()
    batch = processor(audio=[audio, signals[0]], sampling_rate=16000, return_tensors="pt")
    features, mask = batch["input_features"], batch["attention_mask"]
    segments = model.long_form_segments(features, mask, segment_seconds=10.0)
    assert len(segments[1]) == 1  # a short recording is one segment
    spans = segments[0]
    assert 0 <= spans[0][0] and spans[-1][1] <= int(mask[0].sum()) and len(spans) >= 6
    assert all(e0 <= a1 for (_, e0), (a1, _) in zip(spans, spans[1:]))  # in order, nothing twice
    assert all(e - a <= 1000 for a, e in spans)  # at most 10 s of 10 ms frames
    # nothing lost: every frame the CTC head hears as speech is in a segment, every pause left out is one
    best = model.ctc_log_probs(model.encode(features[:1])[0])[0].argmax(-1)
    speech = {4 * t for t in torch.nonzero(best != model.config.blank_token_id).flatten().tolist()}
    assert all(any(a <= t < e for a, e in spans) for t in speech)
    assert all(not any(a1 <= t < e1 for t in speech) for (_, a1), (e1, _) in zip(spans, spans[1:]))
    parts = [processor.batch_decode(model.generate(features[:1, a:e], segment_seconds=float("inf"), **options),
                                    skip_special_tokens=True)[0] for a, e in spans]  # fmt: skip
    whole = model.generate(features, attention_mask=mask, segment_seconds=10.0, **options)
    short = processor.batch_decode(model.generate(features[1:, : int(mask[1].sum())], **options), skip_special_tokens=True)
    assert processor.batch_decode(whole, skip_special_tokens=True) == [" ".join(filter(None, parts)), short[0]]


def test_the_pipeline_transcribes_long_recordings_whole(trained_dir, processor, signals):
    audio, _ = recording(signals, repeats=20)
    model = SpeechSeqForConditionalGeneration.from_pretrained(trained_dir).eval()
    features = processor(audio=[audio], sampling_rate=16000, return_tensors="pt")["input_features"]
    expected = processor.batch_decode(model.generate(features), skip_special_tokens=True)[0]
    segments = model.long_form_segments(features)[0]
    assert len(segments) >= 6 and max(e - a for a, e in segments) <= 1000  # 60 s in segments of at most 10 s
    asr = pipeline("automatic-speech-recognition", model=str(trained_dir))
    assert asr(audio)["text"] == expected


def test_every_long_enough_pause_is_a_cut():
    is_blank = [False] * 4 + [True] * 2 + [False] * 4 + [True] * 6 + [False] * 4
    assert silence_segments(is_blank, max_frames=100, min_pause=5) == [(0, 13), (13, 20)]
    assert silence_segments(is_blank, max_frames=100, min_pause=2) == [(0, 5), (5, 13), (13, 20)]
    assert silence_segments([True] * 8 + [False] * 4, max_frames=100, min_pause=2) == [(0, 12)]  # not at the edges


def test_segments_are_trimmed_to_their_speech_and_clicks_in_pauses_dropped():
    #          pause(5)      speech(4)     pause(6)     click   pause(4)     speech(3)
    is_blank = [True] * 5 + [False] * 4 + [True] * 6 + [False] + [True] * 4 + [False] * 3
    segments = silence_segments(is_blank, max_frames=100, min_pause=3)
    assert segments == [(0, 12), (12, 18), (18, 23)]
    assert trim_pauses(segments, is_blank, margin=2) == [(3, 11), (13, 18), (18, 23)]
    assert trim_pauses(segments, is_blank, margin=0) == [(5, 9), (15, 16), (20, 23)]
    assert trim_pauses(segments, is_blank, margin=2, min_speech=2) == [(3, 11), (18, 23)]  # the click is not speech
    assert trim_pauses([(0, 4)], [True] * 4, margin=1) == []  # nothing heard: nothing to decode
    with pytest.raises(ValueError, match="margin"):
        trim_pauses(segments, is_blank, margin=-1)


def test_long_recordings_are_aligned_segment_by_segment(trained_dir, processor, signals):
    audio, _ = recording(signals, repeats=20)  # 60 s: more encoder frames than one alignment should hold
    model = SpeechSeqForConditionalGeneration.from_pretrained(trained_dir).eval()
    features = processor(audio=[audio], sampling_rate=16000, return_tensors="pt")["input_features"]
    output = model.generate(features, segment_seconds=10.0, return_token_spans=True)
    # the same, a segment at a time through the public pieces: each segment's transcript aligned with the segment,
    # moved to where the segment starts (4 input frames an encoder frame), a space at the pause between segments
    space = processor.tokenizer.convert_tokens_to_ids(" ")
    expected = []
    for start, end in model.long_form_segments(features, segment_seconds=10.0)[0]:
        tokens = model.generate(features[:, start:end], segment_seconds=float("inf"))
        spans = [(t, a + start // 4, b + start // 4) for t, a, b in model.align(features[:, start:end], tokens)[0]]
        if spans and expected:
            expected.append((space, expected[-1][2], spans[0][1]))
        expected += spans
    assert output.token_spans == [expected]
    text = [t for t in output.sequences[0].tolist() if t not in (model.config.decoder_start_token_id,
                                                                  model.config.eos_token_id, model.config.pad_token_id)]
    assert [t for t, _, _ in expected] == text  # every token of the transcript has its span, in order


def test_the_pipeline_gives_word_times_for_long_recordings(trained_dir, signals):
    audio, _ = recording(signals, repeats=20)
    asr = pipeline("automatic-speech-recognition", model=str(trained_dir))
    out = asr(audio, return_timestamps="word")
    assert out["text"] == asr(audio)["text"] and [w["text"] for w in out["chunks"]] == out["text"].split()
    times = [t for w in out["chunks"] for t in w["timestamp"]]
    assert times == sorted(times) and 0 <= times[0] and times[-1] <= len(audio) / 16000 + asr.model.frame_seconds
    assert times[-1] > 40  # the words of the whole minute, not of its first segment


def test_chunk_length_s_sets_the_segments_and_repeats_no_word(trained_dir, processor, signals):
    audio, _ = recording(signals, repeats=10)  # 30 s
    model = SpeechSeqForConditionalGeneration.from_pretrained(trained_dir).eval()
    features = processor(audio=[audio], sampling_rate=16000, return_tensors="pt")["input_features"]
    expected = processor.batch_decode(model.generate(features, segment_seconds=5.0), skip_special_tokens=True)[0]
    assert max(e - a for a, e in model.long_form_segments(features, segment_seconds=5.0)[0]) <= 500
    asr = pipeline("automatic-speech-recognition", model=str(trained_dir))
    # the segments partition the audio (tested above), where transformers' chunks overlap by their strides
    assert asr(audio, chunk_length_s=5, stride_length_s=1)["text"] == expected
    timed = asr(audio, chunk_length_s=5, return_timestamps="word")
    assert [w["text"] for w in timed["chunks"]] == expected.split() and timed["chunks"][-1]["timestamp"][1] > 25
    with pytest.raises(ValueError, match="chunk_length_s"):
        asr(audio, chunk_length_s=-1)


def test_token_spans_from_generate_are_the_alignment_of_its_output(trained_dir, processor, signals):
    model = SpeechSeqForConditionalGeneration.from_pretrained(trained_dir).eval()
    batch = processor(audio=signals, sampling_rate=16000, return_tensors="pt")
    features, mask = batch["input_features"], batch["attention_mask"]
    for options in ({}, {"num_beams": 3, "ctc_weight": 0.3, "num_return_sequences": 2}, {"decoding": "ctc"}):
        output = model.generate(features, attention_mask=mask, return_token_spans=True, **options)
        copies = len(output.sequences) // 2
        assert output.token_spans == model.align(features.repeat_interleave(copies, 0), output.sequences,
                                                 mask.repeat_interleave(copies, 0))  # fmt: skip
        assert [len(spans) for spans in output.token_spans[::copies]] == [len(t) for t in TRANSCRIPTS]
    assert model.generate(features, attention_mask=mask, return_token_spans=False).shape[0] == 2
    long_audio, _ = recording(signals, repeats=20)
    with pytest.raises(ValueError, match="num_return_sequences"):
        model.generate(processor(audio=[long_audio], sampling_rate=16000, return_tensors="pt")["input_features"],
                       num_beams=3, num_return_sequences=2)  # fmt: skip
