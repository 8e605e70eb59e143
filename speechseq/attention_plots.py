"""Attention plots during training: see alignment form (or fail to).

At each evaluation `AttentionPlots` runs the model on a fixed dev utterance, teacher-forced on its transcript (as
ESPnet's `PlotAttentionReport`), and draws one layer's decoder self-attention and cross-attention (one head, or the
mean over heads) as PNG heatmaps in `<output_dir>/attention/`; it transcribes a few dev utterances and writes their
references and hypotheses beside them; with TensorBoard among `--report_to`, both go there too (a run named
`attention` beside the Trainer's, under `<output_dir>/runs/` or `$TENSORBOARD_LOGGING_DIR`). A model that has learnt
to listen shows a monotonic diagonal in cross-attention.
"""

import logging
import os
from pathlib import Path

import numpy as np
import torch
from transformers import TrainerCallback

from .data.collator import SpeechSeqDataCollator

__all__ = ["AttentionPlots", "plot_attention"]

logger = logging.getLogger(__name__)


def plot_attention(weights: np.ndarray, path, title: str, queries: list[str], keys: list[str] | None = None):
    """Draw `weights` (queries, keys) as a heatmap with one labelled row per query token; write it to `path` (PNG).

    Returns:
        The image as a (height, width, 3) uint8 array (for TensorBoard).
    """
    import matplotlib

    matplotlib.use("Agg")  # no display: draw to files
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(max(4.0, weights.shape[1] / 12), max(3.0, weights.shape[0] / 5)))
    image = axes.imshow(weights, aspect="auto", origin="upper", interpolation="nearest", cmap="viridis")
    axes.set_yticks(range(len(queries)), queries, fontsize=7)
    if keys is not None:
        axes.set_xticks(range(len(keys)), keys, fontsize=7)
    axes.set_xlabel("encoder frame" if keys is None else "token")
    axes.set_ylabel("output token")
    axes.set_title(title, fontsize=9)
    figure.colorbar(image, ax=axes)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    figure.canvas.draw()
    pixels = np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()
    plt.close(figure)
    return pixels


class AttentionPlots(TrainerCallback):
    """After each evaluation (main process only): attention heatmaps of `rows[0]` and transcripts of the first
    `examples` rows. `layer` picks the decoder layer (negative counts from the end), `head` one head (-1: their mean).

    Files, for evaluation at step N: `attention/step-N-cross.png`, `attention/step-N-self.png` and
    `attention/step-N.txt` (reference and hypothesis of each utterance).
    """

    def __init__(self, processor, rows, layer: int = -1, head: int = -1, examples: int = 3):
        if len(rows) == 0 or not rows[0].get("text"):
            raise ValueError("attention plots need evaluation utterances with transcripts (teacher forcing)")
        self.processor, self.layer, self.head = processor, layer, head
        self.rows = [rows[i] for i in range(min(max(examples, 1), len(rows)))]
        self.collate = SpeechSeqDataCollator(processor)
        self.writer = None

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero or model is None:
            return
        folder = Path(args.output_dir) / "attention"
        folder.mkdir(parents=True, exist_ok=True)
        training = model.training
        model.eval()
        try:
            images, text = self._draw(model, folder, state.global_step)
        finally:
            model.train(training)
        if "tensorboard" in (args.report_to or []):
            logging_dir = os.getenv("TENSORBOARD_LOGGING_DIR") or os.path.join(args.output_dir, "runs")
            self._to_tensorboard(os.path.join(logging_dir, "attention"), state.global_step, images, text)

    @torch.no_grad()
    def _draw(self, model, folder: Path, step: int):
        batch = self.collate(self.rows).to(model.device)
        out = model(**batch, output_attentions=True)
        labels = batch["labels"][0]
        tokens = labels[labels != -100]  # the transcript and [EOS]
        inputs = [model.config.decoder_start_token_id, *tokens[:-1].tolist()]
        names = ["␣" if name == " " else name for name in self.processor.tokenizer.convert_ids_to_tokens(inputs)]
        frames = int(out.encoder_output_lengths[0])
        layers = len(out.cross_attentions)
        layer = self.layer % layers
        head = "mean of heads" if self.head < 0 else f"head {self.head}"

        def pick(weights):  # (B, heads, queries, keys) -> (queries, keys) of the first utterance
            weights = weights[0].float()
            return (weights.mean(0) if self.head < 0 else weights[self.head]).cpu().numpy()

        n = len(tokens)
        cross = pick(out.cross_attentions[layer])[:n, :frames]
        self_ = pick(out.decoder_attentions[layer])[:n, :n]
        images = {
            "cross": plot_attention(cross, folder / f"step-{step}-cross.png",
                                    f"step {step}: cross-attention, decoder layer {layer}, {head}", names),
            "self": plot_attention(self_, folder / f"step-{step}-self.png",
                                   f"step {step}: self-attention, decoder layer {layer}, {head}", names, names),
        }  # fmt: skip

        generated = model.generate(batch["input_features"], attention_mask=batch["attention_mask"])
        hypotheses = self.processor.batch_decode(generated, skip_special_tokens=True)
        text = "\n\n".join(f"REF: {row['text']}\nHYP: {hypothesis}" for row, hypothesis in zip(self.rows, hypotheses))
        (folder / f"step-{step}.txt").write_text(text + "\n")
        logger.info("step %d: attention plots and %d transcripts in %s", step, len(self.rows), folder)
        return images, text

    def _to_tensorboard(self, logging_dir, step: int, images: dict, text: str):
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(logging_dir)
        for name, pixels in images.items():
            self.writer.add_image(f"attention/{name}", pixels, step, dataformats="HWC")
        self.writer.add_text("transcripts", text.replace("\n", "  \n"), step)  # markdown line breaks
        self.writer.flush()

    def on_train_end(self, args, state, control, **kwargs):
        if self.writer is not None:
            self.writer.close()
            self.writer = None
