"""Checkpoint averaging: the code behind `speechseq-average` and `speechseq-train --average_checkpoints N`.

The mean of the weights of a run's last N checkpoints (or of the N with the best dev loss) is a model that is
usually better than any one of them: the standard last step of ESPnet's and icefall's recipes. Written here rather
than taken from a library because neither transformers nor accelerate has one; it reads the Trainer's own
checkpoint folders (`checkpoint-<step>/`, `trainer_state.json`) and writes a model directory that `from_pretrained`
and the ASR pipeline load.

    speechseq-average --model_dir run --last 5                    # writes run/averaged
    speechseq-average --model_dir run --best 5 --output_dir avg   # the 5 with the lowest eval_loss
"""

import argparse
import json
import logging
from pathlib import Path

import torch

from .modeling_speechseq import SpeechSeqForConditionalGeneration
from .processing_speechseq import SpeechSeqProcessor

__all__ = ["average_checkpoints", "choose_checkpoints", "write_average", "main"]

logger = logging.getLogger("speechseq.checkpoint_averaging")

def _complete_checkpoints(model_dir: Path) -> list[Path]:
    """The run's checkpoints written to the end (their trainer_state.json reads), oldest first."""
    found = []
    for path in model_dir.glob("checkpoint-*"):
        if path.name.split("-")[-1].isdigit() and (path / "trainer_state.json").is_file():
            try:
                json.loads((path / "trainer_state.json").read_text())
            except ValueError:
                logger.warning("skipping %s: its trainer_state.json was only partly written", path)
                continue
            found.append(path)
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def choose_checkpoints(model_dir, last: int | None = None, best: int | None = None) -> list[Path]:
    """The checkpoints to average: the `last` newest, or the `best` with the lowest `eval_loss` logged at their step.

    Raises:
        ValueError: when neither or both are given, or the run has fewer checkpoints (or evaluations) than asked.
    """
    if (last is None) == (best is None):
        raise ValueError("give exactly one of last=N or best=N")
    count = last if last is not None else best
    if count < 1:
        raise ValueError(f"the number of checkpoints to average must be at least 1, got {count}")
    model_dir = Path(model_dir)
    checkpoints = _complete_checkpoints(model_dir)
    if len(checkpoints) < count:
        raise ValueError(f"{model_dir} has {len(checkpoints)} complete checkpoints, fewer than the {count} asked "
                         "(the Trainer keeps --save_total_limit of them)")  # fmt: skip
    if last is not None:
        return checkpoints[-last:]
    history = json.loads((checkpoints[-1] / "trainer_state.json").read_text())["log_history"]
    losses = {entry["step"]: entry["eval_loss"] for entry in history if "eval_loss" in entry}
    scored = [path for path in checkpoints if int(path.name.split("-")[-1]) in losses]
    if len(scored) < count:
        raise ValueError(f"only {len(scored)} checkpoints of {model_dir} have an eval_loss at their step; "
                         f"{count} asked (evaluate at every save: --eval_steps = --save_steps)")  # fmt: skip
    chosen = sorted(scored, key=lambda p: losses[int(p.name.split("-")[-1])])[:best]
    return sorted(chosen, key=lambda p: int(p.name.split("-")[-1]))


@torch.no_grad()
def average_checkpoints(paths) -> SpeechSeqForConditionalGeneration:
    """A model whose every floating-point tensor is the mean of the checkpoints' (integer buffers, such as
    BatchNorm's step count, are the last checkpoint's), with the last checkpoint's config.

    Raises:
        ValueError: when no path is given or the checkpoints' tensors differ in name or shape.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("no checkpoints to average")
    model = SpeechSeqForConditionalGeneration.from_pretrained(paths[-1])
    total = {name: tensor.double() for name, tensor in model.state_dict().items() if tensor.is_floating_point()}
    for path in paths[:-1]:
        state = SpeechSeqForConditionalGeneration.from_pretrained(path).state_dict()
        if state.keys() != model.state_dict().keys():
            raise ValueError(f"{path} holds other tensors than {paths[-1]}: not checkpoints of one model")
        for name in total:
            if state[name].shape != total[name].shape:
                raise ValueError(f"{name} has shape {tuple(state[name].shape)} in {path} but "
                                 f"{tuple(total[name].shape)} in {paths[-1]}")  # fmt: skip
            total[name] += state[name].double()
    current = model.state_dict()
    for name, summed in total.items():
        current[name].copy_(summed / len(paths))  # in place: tied tensors stay tied
    return model.eval()


def write_average(paths, output_dir) -> Path:
    """Average `paths` into `output_dir`, with the newest checkpoint's generation config and processor (the Trainer
    saves it in each checkpoint) beside it."""
    paths, output_dir = [Path(p) for p in paths], Path(output_dir)
    model = average_checkpoints(paths)
    model.save_pretrained(output_dir)
    if (paths[-1] / "processor_config.json").is_file():
        SpeechSeqProcessor.from_pretrained(paths[-1]).save_pretrained(output_dir)
    else:
        logger.warning("%s has no processor: %s holds the averaged model alone", paths[-1], output_dir)
    (output_dir / "averaged_from.json").write_text(json.dumps([p.name for p in paths], indent=1))
    logger.info("averaged %d checkpoints (%s) into %s", len(paths), ", ".join(p.name for p in paths), output_dir)
    return output_dir


def main(argv=None):
    parser = argparse.ArgumentParser(description="Average a speechseq run's checkpoints into a model directory.")
    parser.add_argument("--model_dir", required=True, help="the run's --output_dir, holding checkpoint-<step>/")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--last", type=int, help="average the newest N checkpoints")
    group.add_argument("--best", type=int, help="average the N checkpoints with the lowest eval_loss")
    parser.add_argument("--output_dir", help="where to write the averaged model (default: MODEL_DIR/averaged)")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    paths = choose_checkpoints(args.model_dir, last=args.last, best=args.best)
    write_average(paths, args.output_dir or Path(args.model_dir) / "averaged")


if __name__ == "__main__":
    main()
