"""Greedy decoding through transformers' generate() against the same search written out, on a trained model.

    python bench/greedy_consistency.py --model_dir demo/model --corpus_dir demo/corpus --utterances 64

`model.generate(num_beams=1)` hands the search to transformers' `GenerationMixin` and its key/value cache; a change
in how transformers passes that cache (5.24 renamed it) shows up here first, as transcripts that differ from an
argmax loop that reruns the whole prefix through the decoder at every step, without a cache. Run it after
`make test-latest`, on the model `make demo` trains. Prints how many transcripts agree and both CERs; exits 1 on any
difference.
"""

import argparse
import logging
import sys

import torch

from speechseq import SpeechSeqForConditionalGeneration, SpeechSeqProcessor
from speechseq.data import load_corpus
from speechseq.data.collator import SpeechSeqDataCollator
from speechseq.evaluation import error_rates

logger = logging.getLogger("bench.greedy_consistency")


@torch.no_grad()
def argmax_without_cache(model, features: torch.Tensor, max_new_tokens: int) -> list[int]:
    """Greedy search for one unpadded utterance, the whole prefix through the decoder at every step."""
    encoder_outputs = model.model.encoder(features)
    ids = torch.tensor([[model.config.decoder_start_token_id]])
    for _ in range(max_new_tokens):
        logits = model(encoder_outputs=encoder_outputs, decoder_input_ids=ids, use_cache=False).logits
        token = logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, token], dim=1)
        if token.item() == model.config.eos_token_id:
            break
    return ids[0].tolist()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--corpus_dir", required=True)
    parser.add_argument("--split", default="test_unseen")
    parser.add_argument("--utterances", type=int, default=64)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    model = SpeechSeqForConditionalGeneration.from_pretrained(args.model_dir).eval()
    processor = SpeechSeqProcessor.from_pretrained(args.model_dir)
    rows = load_corpus(args.corpus_dir)[args.split]
    rows = rows.select(range(min(args.utterances, len(rows))))
    collate = SpeechSeqDataCollator(processor)
    library, by_hand = [], []
    for start in range(0, len(rows), 16):
        batch = collate([rows[i] for i in range(start, min(start + 16, len(rows)))])
        features, mask = batch["input_features"], batch["attention_mask"]
        limit = int(model._get_feat_extract_output_lengths(mask.sum(-1)).max()) + 1
        with torch.no_grad():
            # the decoder alone, whatever search the model saved in its generation_config: transformers' greedy path
            generated = model.generate(features, attention_mask=mask, num_beams=1, ctc_weight=0.0, lm_weight=0.0,
                                       length_bonus=0.0, max_new_tokens=limit)  # fmt: skip
        library += processor.batch_decode(generated, skip_special_tokens=True)
        for i, frames in enumerate(mask.sum(-1).tolist()):
            # the same length limit as generate(): one token per encoder frame of the batch's longest row, plus [EOS]
            ids = argmax_without_cache(model, features[i : i + 1, :frames], limit)
            by_hand.append(processor.decode(ids, skip_special_tokens=True))
    agree = sum(a == b for a, b in zip(library, by_hand))
    references = rows["text"]
    logger.info("%d of %d transcripts agree; CER generate() %.1f%%, argmax loop %.1f%%", agree, len(rows),
                100 * error_rates(references, library)["cer"], 100 * error_rates(references, by_hand)["cer"])  # fmt: skip
    for a, b in [(a, b) for a, b in zip(library, by_hand) if a != b][:3]:
        logger.info("differ:\n  generate(): %s\n  argmax:     %s", a, b)
    sys.exit(0 if agree == len(rows) else 1)


if __name__ == "__main__":
    main()
