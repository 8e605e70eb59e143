import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import AutoTokenizer

from speechseq import (
    SPECIAL_TOKENS,
    load_tokenizer,
    normalize_text,
    special_token_ids,
    suppressed_token_ids,
    train_tokenizer,
)

SENTENCES = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
]  # Harvard sentences


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Hello, World!", "hello world"),
        ("It's 4:30 -- café & co.", "it's four thirty cafe and co"),
        ("In 1984, 3.5% of the 21st-century", "in one thousand nine hundred eighty four three point five percent of "
                                              "the twenty first century"),
        ("'quoted' rock 'n' roll don’t", "quoted rock n roll don't"),
        ("  many\tspaces\n\n", "many spaces"),
        ("1,000,000 2nd 3rd 12th 40th", "one million second third twelfth fortieth"),
    ],
)  # fmt: skip
def test_normalize_text(text, expected):
    assert normalize_text(text) == expected
    assert normalize_text(expected) == expected  # idempotent


def test_char_tokenizer_round_trips_and_appends_eos():
    tokenizer = train_tokenizer(SENTENCES, kind="char")
    assert tokenizer.convert_ids_to_tokens(list(range(6))) == SPECIAL_TOKENS
    characters = sorted(set("".join(normalize_text(s) for s in SENTENCES)))
    assert len(tokenizer) == 6 + len(characters)
    for sentence in SENTENCES:
        ids = tokenizer(normalize_text(sentence)).input_ids
        assert ids[-1] == tokenizer.eos_token_id == 4
        assert len(ids) == len(normalize_text(sentence)) + 1  # one token per character
        assert tokenizer.decode(ids, skip_special_tokens=True) == normalize_text(sentence)
    unseen = next(c for c in "abcdefghijklmnopqrstuvwxyz" if c not in characters)
    assert tokenizer(f"a{unseen}").input_ids == [tokenizer.convert_tokens_to_ids("a"), tokenizer.unk_token_id, 4]


@pytest.mark.parametrize("vocab_size", [60, 1000])
def test_bpe_tokenizer_round_trips(vocab_size):
    texts = [f"{a} {b}" for a in SENTENCES for b in SENTENCES]
    tokenizer = train_tokenizer(texts, kind="bpe", vocab_size=vocab_size)
    assert tokenizer.convert_ids_to_tokens(list(range(6))) == SPECIAL_TOKENS
    assert 6 < len(tokenizer) <= vocab_size
    for sentence in SENTENCES:
        ids = tokenizer(normalize_text(sentence)).input_ids
        assert len(ids) < len(normalize_text(sentence))  # merges happened
        assert tokenizer.decode(ids, skip_special_tokens=True) == normalize_text(sentence)


def test_tokenizer_round_trips_through_auto_tokenizer(tmp_path):
    tokenizer = train_tokenizer(SENTENCES, kind="bpe", vocab_size=200)
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.get_vocab() == tokenizer.get_vocab()
    assert special_token_ids(loaded) == special_token_ids(tokenizer)
    text = normalize_text(SENTENCES[3])
    assert loaded(text).input_ids == tokenizer(text).input_ids
    assert load_tokenizer(tmp_path).get_vocab() == tokenizer.get_vocab()


def test_loads_an_h4_style_tokenizer_json(tmp_path):
    # The assignment's files: a `tokenizers` BPE model, the six special tokens first, upper-case text.
    h4 = Tokenizer(models.BPE(unk_token="[UNK]"))
    h4.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    h4.train_from_iterator(
        [s.upper() for s in SENTENCES], trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIAL_TOKENS)
    )
    h4.save(str(tmp_path / "tokenizer_1k.json"))
    tokenizer = load_tokenizer(tmp_path / "tokenizer_1k.json")
    assert special_token_ids(tokenizer) == dict(vocab_size=h4.get_vocab_size(), pad_token_id=0, bos_token_id=3,
                                                eos_token_id=4, decoder_start_token_id=3, blank_token_id=5)  # fmt: skip
    ids = tokenizer("GLUE THE SHEET").input_ids
    assert ids[:-1] == h4.encode("GLUE THE SHEET").ids and ids[-1] == 4


def test_bad_arguments_and_files_raise(tmp_path):
    with pytest.raises(ValueError, match="kind must be"):
        train_tokenizer(SENTENCES, kind="word")
    with pytest.raises(ValueError, match="vocab_size applies to kind='bpe' only"):
        train_tokenizer(SENTENCES, kind="char", vocab_size=100)
    with pytest.raises(ValueError, match="does not exist"):
        load_tokenizer(tmp_path / "missing.json")
    plain = Tokenizer(models.WordLevel({"[PAD]": 0, "[UNK]": 1, "a": 2}, unk_token="[UNK]"))
    plain.save(str(tmp_path / "plain.json"))
    with pytest.raises(ValueError, match=r"lacks the special tokens \['\[MASK\]', '\[SOS\]', '\[EOS\]', '\[BLANK\]'\]"):
        load_tokenizer(tmp_path / "plain.json")


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_every_special_token_but_eos_is_suppressed(kind):
    tokenizer = train_tokenizer(["hello world", "a cat sat"] * 4, kind=kind, vocab_size=30 if kind == "bpe" else None)
    suppressed = suppressed_token_ids(tokenizer)
    assert tokenizer.convert_ids_to_tokens(suppressed) == ["[PAD]", "[UNK]", "[MASK]", "[SOS]", "[BLANK]"]
