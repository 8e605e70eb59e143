"""CTC forced alignment (Viterbi) against known alignments and a brute-force search; timestamps of a trained model."""

import itertools
import math

import pytest
import torch

from conftest import TRANSCRIPTS
from speechseq import SpeechSeqForConditionalGeneration
from speechseq.generation_speechseq import ctc_forced_align, timestamp_chunks
from speechseq.ngram_lm import word_pieces

BLANK = 0


def posteriorgram(path, vocab=5, sharpness=8.0):
    """Log-probabilities whose best frame-by-frame labels are `path`."""
    logits = torch.randn(len(path), vocab, generator=torch.Generator().manual_seed(len(path)))
    logits[torch.arange(len(path)), torch.tensor(path)] += sharpness
    return logits.log_softmax(-1)


def test_a_known_alignment_is_recovered_with_padding_in_the_batch():
    # frames: blank a a blank b blank b b blank | the repeated b needs the blank between
    path = [BLANK, 1, 1, BLANK, 2, BLANK, 2, 2, BLANK]
    other = [3, 3, BLANK, 4]
    log_probs = torch.full((2, len(path), 5), -50.0)
    log_probs[0] = posteriorgram(path)
    log_probs[1, : len(other)] = posteriorgram(other)
    labels = torch.tensor([[1, 2, 2], [3, 4, 0]])
    positions, scores = ctc_forced_align(log_probs, torch.tensor([9, 4]), labels, torch.tensor([3, 2]), BLANK)
    assert positions[0].tolist() == [-1, 0, 0, -1, 1, -1, 2, 2, -1]
    assert positions[1].tolist() == [0, 0, -1, 1, -1, -1, -1, -1, -1]  # padding frames are -1
    alone, alone_score = ctc_forced_align(log_probs[1:, :4], torch.tensor([4]), labels[1:, :2], torch.tensor([2]), BLANK)
    assert alone[0].tolist() == positions[1, :4].tolist() and alone_score[0] == pytest.approx(scores[1].item())


def all_alignments(T, labels):
    """Every frame labelling that collapses to `labels` (brute force)."""
    for frames in itertools.product(range(5), repeat=T):
        collapsed = [f for i, f in enumerate(frames) if f != BLANK and (i == 0 or f != frames[i - 1])]
        if collapsed == labels:
            yield frames


@pytest.mark.parametrize("seed", range(3))
def test_the_viterbi_score_is_the_best_alignment_by_brute_force(seed):
    T, labels = 6, [1, 2, 2]
    log_probs = torch.randn(1, T, 5, generator=torch.Generator().manual_seed(seed)).log_softmax(-1)
    best = max(sum(log_probs[0, t, f].item() for t, f in enumerate(frames)) for frames in all_alignments(T, labels))
    positions, scores = ctc_forced_align(log_probs, torch.tensor([T]), torch.tensor([labels]), torch.tensor([3]), BLANK)
    assert scores[0].item() == pytest.approx(best, abs=1e-5)
    frames = [labels[p] if p >= 0 else BLANK for p in positions[0].tolist()]
    assert sum(log_probs[0, t, f].item() for t, f in enumerate(frames)) == pytest.approx(best, abs=1e-5)


def test_a_transcript_longer_than_the_audio_is_refused():
    log_probs = torch.randn(1, 3, 5).log_softmax(-1)
    with pytest.raises(ValueError, match="row 0"):
        ctc_forced_align(log_probs, torch.tensor([3]), torch.tensor([[1, 1, 2]]), torch.tensor([3]), BLANK)


def test_word_and_character_chunks(tokenizer):
    ids = {c: tokenizer.convert_tokens_to_ids(c) for c in "ab "}
    spans = [(ids["a"], 0, 2), (ids["b"], 2, 3), (ids[" "], 3, 4), (ids["b"], 5, 7)]
    pieces = word_pieces(tokenizer)
    assert timestamp_chunks(spans, pieces, 0.04) == [{"text": "ab", "timestamp": (0.0, 0.12)},
                                                     {"text": "b", "timestamp": (0.2, 0.28)}]  # fmt: skip
    assert [c["text"] for c in timestamp_chunks(spans, pieces, 0.04, "char")] == ["a", "b", "b"]


def test_timestamps_of_a_trained_model_are_ordered_and_inside_the_audio(trained_dir, processor, signals):
    model = SpeechSeqForConditionalGeneration.from_pretrained(trained_dir).eval()
    batch = processor(audio=[signals[0], signals[1][:12000]], sampling_rate=16000, text=TRANSCRIPTS, return_tensors="pt")
    chunks = model.timestamps(batch["input_features"], batch["labels"], processor.tokenizer, batch["attention_mask"])
    durations = (1.0, 0.75)
    for words, transcript, duration in zip(chunks, TRANSCRIPTS, durations):
        assert " ".join(w["text"] for w in words) == transcript
        times = [t for w in words for t in w["timestamp"]]
        assert times == sorted(times) and 0 <= times[0] and times[-1] <= duration + model.frame_seconds
        assert all(w["timestamp"][0] < w["timestamp"][1] for w in words)
    assert math.isclose(model.frame_seconds, 0.01 * model.config.subsampling_factor)


def test_the_pipeline_returns_word_and_character_timestamps(trained_dir, signals):
    from transformers import pipeline

    asr = pipeline("automatic-speech-recognition", model=str(trained_dir))
    out = asr(signals[0], return_timestamps="word")
    assert out["text"] == TRANSCRIPTS[0]
    assert [chunk["text"] for chunk in out["chunks"]] == TRANSCRIPTS[0].split()
    starts = [chunk["timestamp"][0] for chunk in out["chunks"]]
    assert starts == sorted(starts) and out["chunks"][-1]["timestamp"][1] <= 1.0 + asr.model.frame_seconds
    chars = asr(signals[1], return_timestamps="char")["chunks"]
    assert "".join(chunk["text"] for chunk in chars) == TRANSCRIPTS[1].replace(" ", "")
    assert [asr(s, return_timestamps=True)["chunks"] for s in signals] == [
        o["chunks"] for o in asr(signals, return_timestamps="word", batch_size=2)]  # fmt: skip
    with pytest.raises(ValueError, match="return_timestamps"):
        asr(signals[0], return_timestamps="segment")
