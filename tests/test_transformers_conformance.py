"""transformers' own conformance tests, run against speechseq as transformers runs them against its models.

transformers' source distribution on PyPI ships `tests/test_modeling_common.py` (`ModelTesterMixin`: save/load,
initialisation, output shapes, attention and hidden-state outputs, gradient checkpointing, batching...),
`tests/test_configuration_common.py` (`ConfigTester`) and `tests/test_sequence_feature_extraction_common.py`. This
module downloads the sdist of the installed version once (`pip download`, 10 MB, cached under
`~/.cache/speechseq/`), and runs those mixins with testers written the way transformers' Speech2Text test writes its
own. It is skipped, saying why, only where the download is impossible (no PyPI).

The sdist lacks three modules the mixins import; they are stood in for here (`STAND_INS`): the generation mixin
(speechseq's `generate()` is its own, tested in test_generation_speechseq.py), the export mixin (torch.export of a
speechseq model is not offered) and `config_common_kwargs` (the common config keys, of which the ones transformers 5
still takes are listed). Every skip and override below says why.
"""

import importlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import unittest
import unittest.mock
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

from speechseq import SpeechSeqConfig, SpeechSeqFeatureExtractor, SpeechSeqForConditionalGeneration, SpeechSeqModel

COMMON_TESTS = ("test_modeling_common.py", "test_configuration_common.py", "test_feature_extraction_common.py",
                "test_sequence_feature_extraction_common.py")  # fmt: skip
STAND_INS = {
    "generation/test_utils.py": "class GenerationTesterMixin:\n    pass\n",
    "exporters/test_export.py": "class ExportTesterMixin:\n    pass\n",
    # transformers' tests/utils/test_configuration_utils.py: the keys every config takes, each off its default
    "utils/test_configuration_utils.py": (
        "config_common_kwargs = {'return_dict': False, 'output_hidden_states': True, 'output_attentions': True,\n"
        "                        'dtype': 'float16', 'id2label': {0: 'label'}, 'label2id': {'label': '0'},\n"
        "                        'problem_type': 'regression', 'tokenizer_class': 'BertTokenizerFast'}\n"
    ),
}
PACKAGE = "transformers_common_tests"


def common_tests_root() -> Path:
    """A directory holding the `transformers_common_tests` package: the installed version's common tests."""
    version = transformers.__version__
    cache = Path(os.environ.get("SPEECHSEQ_CACHE", Path.home() / ".cache" / "speechseq")) / f"transformers-{version}"
    package = cache / PACKAGE
    if all((package / name).is_file() for name in COMMON_TESTS):
        return cache
    with tempfile.TemporaryDirectory() as download:
        process = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:", "--no-deps",
             f"transformers=={version}", "--dest", download],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        archives = list(Path(download).glob("transformers-*.tar.gz"))
        if process.returncode or not archives:
            pytest.skip(f"transformers {version}'s source distribution could not be downloaded from PyPI: "
                        f"{process.stderr.strip()[-300:]}", allow_module_level=True)  # fmt: skip
        staging = cache / f"{PACKAGE}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        with tarfile.open(archives[0]) as archive:
            for name in COMMON_TESTS:
                member = archive.getmember(f"transformers-{version}/tests/{name}")
                (staging / name).parent.mkdir(parents=True, exist_ok=True)
                (staging / name).write_bytes(archive.extractfile(member).read())
        for name, text in STAND_INS.items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_text(text)
        for directory in (staging, *(p for p in staging.iterdir() if p.is_dir())):
            (directory / "__init__.py").touch()
        shutil.rmtree(package, ignore_errors=True)
        staging.rename(package)  # whole or not at all: a killed download leaves only the .partial directory
    return cache


sys.path.insert(0, str(common_tests_root()))
modeling_common = importlib.import_module(f"{PACKAGE}.test_modeling_common")
configuration_common = importlib.import_module(f"{PACKAGE}.test_configuration_common")
feature_extraction_common = importlib.import_module(f"{PACKAGE}.test_sequence_feature_extraction_common")
floats_tensor, ids_tensor = modeling_common.floats_tensor, modeling_common.ids_tensor
torch_device = modeling_common.torch_device  # transformers' own choice: the accelerator where there is one


class SpeechSeqModelTester:
    """Config and inputs for the common tests: a small model of real shape (encoder and decoder of different
    depths, 80 mel bins, a padded batch), and the numbers the mixins read (`seq_length` of the decoder,
    `encoder_seq_length` after the x4 front end)."""

    def __init__(self, parent, batch_size=3, frames=40, decoder_length=7, vocab_size=30, hidden_size=32,
                 encoder_layers=3, decoder_layers=2, num_attention_heads=4, is_training=True):  # fmt: skip
        self.parent = parent
        self.batch_size, self.frames, self.seq_length = batch_size, frames, decoder_length
        self.decoder_seq_length = decoder_length
        self.vocab_size, self.hidden_size, self.num_attention_heads = vocab_size, hidden_size, num_attention_heads
        self.encoder_layers, self.decoder_layers = encoder_layers, decoder_layers
        self.num_hidden_layers = decoder_layers  # the mixins count the decoder's
        self.is_training = is_training
        self.overrides = {}  # config fields a test changes
        self.encoder_seq_length = int(SpeechSeqModel(self.get_config())._get_feat_extract_output_lengths(frames))
        self.key_length = self.encoder_seq_length

    def get_config(self) -> SpeechSeqConfig:
        return SpeechSeqConfig(
            vocab_size=self.vocab_size, d_model=self.hidden_size, encoder_layers=self.encoder_layers,
            decoder_layers=self.decoder_layers, encoder_attention_heads=self.num_attention_heads,
            decoder_attention_heads=self.num_attention_heads, encoder_ffn_dim=64, decoder_ffn_dim=48,
            subsampling_channels=8, num_mel_bins=80, dropout=0.0, max_source_positions=64, max_target_positions=32,
            spec_augment_freq_masks=0, spec_augment_time_masks=0, pad_token_id=0, blank_token_id=1, unk_token_id=2,
            bos_token_id=3, eos_token_id=4, decoder_start_token_id=3, **self.overrides,
        )  # fmt: skip

    def prepare_config_and_inputs(self):
        input_features = floats_tensor([self.batch_size, self.frames, 80])
        attention_mask = torch.ones(self.batch_size, self.frames, dtype=torch.long, device=torch_device)
        attention_mask[-1, self.frames - 9 :] = 0  # one utterance padded
        decoder_input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size).clamp(5)
        decoder_input_ids[:, 0] = 3
        inputs = {"input_features": input_features, "attention_mask": attention_mask,
                  "decoder_input_ids": decoder_input_ids}  # fmt: skip
        return self.get_config(), inputs

    def prepare_config_and_inputs_for_common(self):
        return self.prepare_config_and_inputs()


class SpeechSeqModelTest(modeling_common.ModelTesterMixin, unittest.TestCase):
    all_model_classes = (SpeechSeqModel, SpeechSeqForConditionalGeneration)
    # speechseq's generate() is its own search (greedy through transformers' when nothing is fused); its behaviour is
    # tested in test_generation_speechseq.py, and transformers' GenerationTesterMixin is not in the sdist
    all_generative_model_classes = ()
    is_encoder_decoder = True
    # the decoder's input embedding is its token embedding; an input given as embeddings is not offered
    test_resize_embeddings = False

    def setUp(self):
        self.model_tester = SpeechSeqModelTester(self)
        self.config_tester = configuration_common.ConfigTester(self, config_class=SpeechSeqConfig, has_text_modality=False)

    def test_config(self):
        self.config_tester.run_common_tests()

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs = super()._prepare_for_class(inputs_dict, model_class, return_labels=return_labels)
        if return_labels and model_class is SpeechSeqForConditionalGeneration:
            labels = inputs_dict["decoder_input_ids"][:, 1:].clone()
            eos = torch.full((len(labels), 1), 4, device=labels.device)
            inputs["labels"] = torch.cat([labels, eos], dim=1)  # [EOS] ends each
        return inputs

    def test_hidden_states_output(self):
        # the mixin's version takes the encoder's hidden states to have the input's length: speechseq's front end
        # takes it from frames to encoder frames (x4), as Speech2Text's, whose test overrides it the same way
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            model = model_class(config).to(torch_device).eval()
            with torch.no_grad():
                outputs = model(**inputs, output_hidden_states=True)
            encoder, decoder = outputs.encoder_hidden_states, outputs.decoder_hidden_states
            self.assertEqual(len(encoder), config.encoder_layers + 1)
            self.assertEqual(len(decoder), config.decoder_layers + 1)
            self.assertEqual(list(encoder[0].shape[-2:]), [self.model_tester.encoder_seq_length, config.d_model])
            self.assertEqual(list(decoder[0].shape[-2:]), [self.model_tester.seq_length, config.d_model])

    def test_attention_outputs(self):
        # as test_hidden_states_output: self-attention over encoder frames, cross-attention from tokens to them;
        # and speechseq's outputs carry two more fields (`ctc_logits`, `encoder_output_lengths`) than the mixin counts
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        frames, tokens = self.model_tester.encoder_seq_length, self.model_tester.seq_length
        heads = config.encoder_attention_heads
        for model_class in self.all_model_classes:
            model = model_class(config).to(torch_device).eval()
            with torch.no_grad():
                outputs = model(**inputs, output_attentions=True)
            self.assertEqual(len(outputs.encoder_attentions), config.encoder_layers)
            self.assertEqual(list(outputs.encoder_attentions[0].shape[-3:]), [heads, frames, frames])
            self.assertEqual(len(outputs.decoder_attentions), config.decoder_layers)
            self.assertEqual(list(outputs.decoder_attentions[0].shape[-3:]), [heads, tokens, tokens])
            self.assertEqual(list(outputs.cross_attentions[0].shape[-3:]), [heads, tokens, frames])
            # padding frames get no attention from real frames of the padded utterance
            real = int(inputs["attention_mask"][-1].sum()) // 4 - 1
            self.assertEqual(float(outputs.encoder_attentions[0][-1, :, :real, real + 2 :].abs().sum()), 0.0)
            config._attn_implementation = "eager"  # transformers refuses output_attentions in an SDPA config
            config.output_attentions = True  # the config's setting is honoured when the call does not say
            with torch.no_grad():
                self.assertIsNotNone(model_class(config).to(torch_device).eval()(**inputs).encoder_attentions)
            config.output_attentions, config._attn_implementation = False, "sdpa"

    def test_config_output_options_are_honoured(self):
        # transformers' models fall back to the config for output_attentions, output_hidden_states and return_dict
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        config.output_hidden_states, config.return_dict = True, False
        for model_class in self.all_model_classes:
            model = model_class(config).to(torch_device).eval()
            with torch.no_grad():
                output = model(**inputs)
                self.assertIsInstance(output, tuple)
                self.assertIsNotNone(model(**inputs, return_dict=True).encoder_hidden_states)
                self.assertIsNone(model(**inputs, return_dict=True, output_hidden_states=False).encoder_hidden_states)

    def test_auto_model_builds_the_bare_model(self):
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        self.assertIsInstance(transformers.AutoModel.from_config(config), SpeechSeqModel)

    def test_eager_and_sdpa_give_the_same_outputs(self):
        # transformers' test_eager_matches_sdpa_inference passes the encoder's frame mask as the decoder's token
        # mask (its own TODO), which fits only models whose inputs and transcripts have one length: this is that test
        # for speechseq, a padded batch of both, each implementation seen to run
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        inputs["decoder_attention_mask"] = torch.ones_like(inputs["decoder_input_ids"])
        inputs["decoder_attention_mask"][0, -2:] = 0
        calls = []
        sdpa = torch.nn.functional.scaled_dot_product_attention

        def counted(*args, **kwargs):
            calls.append(kwargs.get("is_causal", False))
            return sdpa(*args, **kwargs)

        with tempfile.TemporaryDirectory() as directory, unittest.mock.patch.object(
            torch.nn.functional, "scaled_dot_product_attention", counted
        ):  # fmt: skip
            SpeechSeqForConditionalGeneration(config).save_pretrained(directory)
            outputs = {}
            for implementation in ("eager", "sdpa"):
                model = SpeechSeqForConditionalGeneration.from_pretrained(
                    directory, attn_implementation=implementation).to(torch_device).eval()  # fmt: skip
                self.assertEqual(model.config._attn_implementation, implementation)
                calls.clear()
                with torch.no_grad():
                    outputs[implementation] = model(**inputs, output_hidden_states=True)
                    generated = model.generate(inputs["input_features"], attention_mask=inputs["attention_mask"],
                                               num_beams=2, ctc_weight=0.3, max_new_tokens=5)  # fmt: skip
                outputs[implementation]["generated"] = generated
                self.assertEqual(bool(calls), implementation == "sdpa")
            # no padding in the decoder's input: SDPA's own causal masking (the fused kernels on GPU)
            calls.clear()
            with torch.no_grad():
                model(inputs["input_features"], decoder_input_ids=inputs["decoder_input_ids"])
            self.assertIn(True, calls)
        for name in ("logits", "ctc_logits", "encoder_last_hidden_state"):
            torch.testing.assert_close(outputs["eager"][name], outputs["sdpa"][name], atol=1e-5, rtol=1e-5)
        self.assertTrue(torch.equal(outputs["eager"]["generated"], outputs["sdpa"]["generated"]))

    def _with_the_heads_only(self, test):
        """Run a mixin test on the class with a loss: the bare `SpeechSeqModel` returns hidden states (transformers
        leaves base models out of its training tests by their names in its own registry, which ours is not in)."""
        classes, self.all_model_classes = self.all_model_classes, (SpeechSeqForConditionalGeneration,)
        try:
            test()
        finally:
            self.all_model_classes = classes

    def test_training(self):
        self._with_the_heads_only(super().test_training)

    def test_training_gradient_checkpointing(self):
        self._with_the_heads_only(super().test_training_gradient_checkpointing)

    def test_training_gradient_checkpointing_use_reentrant_false(self):
        self._with_the_heads_only(super().test_training_gradient_checkpointing_use_reentrant_false)

    def test_training_gradient_checkpointing_use_reentrant_true(self):
        self._with_the_heads_only(super().test_training_gradient_checkpointing_use_reentrant_true)

    def test_encoder_decoder_loss_no_double_shift(self):
        # speechseq's loss is (1 - ctc_weight) x label-smoothed cross-entropy + ctc_weight x CTC (README, "loss"):
        # with both off it must be the plain cross-entropy against `labels`, shifted once, which the mixin checks
        self.model_tester.overrides = {"ctc_weight": 0.0, "label_smoothing": 0.0}
        try:
            super().test_encoder_decoder_loss_no_double_shift()
        finally:
            self.model_tester.overrides = {}

    @unittest.skip("speechseq takes log-mel features, not embeddings: no inputs_embeds (as Speech2Text)")
    def test_inputs_embeds(self):
        pass

    @unittest.skip("speechseq takes log-mel features, not embeddings: no inputs_embeds (as Speech2Text)")
    def test_inputs_embeds_matches_input_ids(self):
        pass


# transformers' test_eager_matches_sdpa_inference_* (one per dtype, padding side...): see
# test_eager_and_sdpa_give_the_same_outputs, which replaces them
for _name in dir(modeling_common.ModelTesterMixin):
    if _name.startswith("test_eager_matches_sdpa_inference"):
        setattr(SpeechSeqModelTest, _name, unittest.skip("its mask fits only inputs as long as their transcripts: "
                                                         "test_eager_and_sdpa_give_the_same_outputs")(lambda self: None))


class SpeechSeqFeatureExtractionTest(feature_extraction_common.SequenceFeatureExtractionTestMixin, unittest.TestCase):
    feature_extraction_class = SpeechSeqFeatureExtractor

    def setUp(self):
        self.feat_extract_tester = SpeechSeqFeatureExtractionTester()


class SpeechSeqFeatureExtractionTester:
    """What the sequence feature extractor mixin pads: model inputs (`input_features`, frames x 80 log-mels) of
    increasing lengths, as transformers' testers of feature extractors with `input_features` make them."""

    batch_size, min_seq_length, max_seq_length = 4, 20, 50
    seq_length_diff = (max_seq_length - min_seq_length) // (batch_size - 1)
    feature_size, padding_value, sampling_rate = 80, 0.0, 16000

    def prepare_feat_extract_dict(self) -> dict:
        return {"feature_size": self.feature_size, "sampling_rate": self.sampling_rate,
                "padding_value": self.padding_value}  # fmt: skip

    def prepare_inputs_for_common(self, equal_length=False, numpify=False):
        lengths = [self.max_seq_length] * self.batch_size if equal_length else range(
            self.min_seq_length, self.max_seq_length + 1, self.seq_length_diff)  # fmt: skip
        rng = np.random.default_rng(0)
        features = [rng.standard_normal((n, self.feature_size)).astype(np.float32) for n in lengths]
        return features if numpify else [x.tolist() for x in features]
