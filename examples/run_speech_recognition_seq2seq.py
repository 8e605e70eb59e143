#!/usr/bin/env python
"""Train a speechseq recogniser with Seq2SeqTrainer (the same program as the `speechseq-train` command).

    python examples/run_speech_recognition_seq2seq.py --corpus_dir corpus --output_dir model --preset small \
        --do_train --do_eval --predict_with_generate --max_steps 20000 ...
    accelerate launch --num_processes 4 examples/run_speech_recognition_seq2seq.py ...   # DDP

Every argument: `--help`. The code: speechseq/training.py.
"""

from speechseq.training import main

if __name__ == "__main__":
    main()
