"""A fixed vocabulary (`tokenizer.vocab`): bert-base-uncased's, read offline from the data root as the tiny-LM
authors used it; token overlap measured on it; and what `committee data pull` writes, from local files."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from orchestrator.config.experiment import load_config
from workers.errors import ConfigError, DataError
from workers.text.overlap import token_id_overlap
from workers.text.vocab import KNOWN_VOCABS, fixed_tokenizer, resolve_vocab

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"
BERT = "bert-base-uncased"


def _sha256sums(data_root: Path) -> dict[str, str]:
    lines = (data_root / "SHA256SUMS").read_text().splitlines()
    return {name.strip(): sha for sha, name in (line.split(maxsplit=1) for line in lines if line.strip())}


def test_bert_base_uncased_resolves_by_name_under_the_data_root(data_root):
    vocab = resolve_vocab(BERT, data_root)
    assert vocab.file == data_root / "tokenizers" / BERT / "vocab.txt"
    assert vocab.sha256 == _sha256sums(data_root)["tokenizers/bert-base-uncased/vocab.txt"] == KNOWN_VOCABS[BERT]["sha256"]
    assert len(vocab.tokens) == 30522 and vocab.describe() == "bert-base-uncased (fixed, 30,522 entries)"
    tokenizer = fixed_tokenizer(vocab)
    assert len(tokenizer) == 30522
    specials = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
    assert dict(zip(specials, tokenizer.convert_tokens_to_ids(list(specials)))) == KNOWN_VOCABS[BERT]["special_ids"]
    assert (tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id,
            tokenizer.mask_token_id) == (0, 100, 101, 102, 103)
    # the same vocabulary given as a file and as its folder
    assert resolve_vocab(str(vocab.file), None).tokens == vocab.tokens
    assert resolve_vocab(str(vocab.file.parent), None).sha256 == vocab.sha256


def test_fixed_tokenizer_encodes_as_berts_reference_pipeline(data_root):
    """Real AG News and FewRel texts encode to the ids of `tokenizers`' BertWordPieceTokenizer on the same
    vocab.txt with lower-casing (bert-base-uncased's normalisation: accents stripped, CJK split, cleaned)."""
    import pyarrow.parquet as pq
    from tokenizers import BertWordPieceTokenizer

    vocab = resolve_vocab(BERT, data_root)
    reference = BertWordPieceTokenizer(str(vocab.file), lowercase=True)
    ours = fixed_tokenizer(vocab)
    texts = pq.read_table(data_root / "ag_news" / "test.parquet").column("text").to_pylist()[:300]
    texts += ["Héllo, Wörld! naïve café 東京 unaffable", "Crème brûlée costs €5 — really?"]
    assert ours(texts)["input_ids"] == [e.ids for e in reference.encode_batch(texts)]


def test_a_folder_with_tokenizer_json_gives_its_vocabulary(tmp_path, small_corpus):
    learned = small_corpus["tokenizer"]
    learned.save_pretrained(str(tmp_path / "learned"))
    (tmp_path / "learned" / "vocab.txt").unlink(missing_ok=True)  # only tokenizer.json is left to read
    vocab = resolve_vocab(str(tmp_path / "learned"), None)
    assert vocab.file.name == "tokenizer.json"
    assert list(vocab.tokens) == [t for t, _ in sorted(learned.get_vocab().items(), key=lambda kv: kv[1])]
    text = small_corpus["articles"][0][:2000]
    assert fixed_tokenizer(vocab)(text)["input_ids"] == learned(text)["input_ids"]


def test_bad_vocabularies_are_named(tmp_path, data_root):
    with pytest.raises(DataError, match=r"tokenizer.vocab no-such-vocab: no vocab.txt.*tokenizers/no-such-vocab"):
        resolve_vocab("no-such-vocab", data_root)
    no_mask = tmp_path / "vocab.txt"
    no_mask.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\n")
    with pytest.raises(DataError, match=r"lacks the special tokens \[MASK\]"):
        resolve_vocab(str(no_mask), None)
    twice = tmp_path / "twice.txt"
    twice.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\nthe\n")
    with pytest.raises(DataError, match=r"lists 'the' twice \(lines 6 and 7\)"):
        resolve_vocab(str(twice), None)
    # a folder named bert-base-uncased must hold bert-base-uncased's vocabulary byte for byte
    fake_root = tmp_path / "root"
    (fake_root / "tokenizers" / BERT).mkdir(parents=True)
    real = (data_root / "tokenizers" / BERT / "vocab.txt").read_text()
    (fake_root / "tokenizers" / BERT / "vocab.txt").write_text(real.replace("\nthe\n", "\nteh\n", 1))
    with pytest.raises(DataError, match="is not bert-base-uncased's vocab.txt"):
        resolve_vocab(BERT, fake_root)


def test_config_takes_one_tokenizer_source():
    cfg = load_config(SMOKE, [f"tokenizer.vocab={BERT}"])
    assert cfg.tokenizer.vocab == BERT and cfg.tokenizer.path is None
    with pytest.raises(ConfigError, match="tokenizer.path and tokenizer.vocab both name a tokenizer"):
        load_config(SMOKE, [f"tokenizer.vocab={BERT}", "tokenizer.path=some/dir"])


def test_token_id_overlap_on_hand_arrays():
    # specials 0 and 1 are left out; task ids 5, 5, 6, 7 (types 5, 6, 7); the corpus holds 5 and 7:
    # types 2 of 3, occurrences 3 of 4
    measured = token_id_overlap(np.array([5, 7, 7, 9]), np.array([0, 5, 5, 6, 7, 1]), (0, 1), vocab_size=10)
    assert measured == {"token_type_overlap": pytest.approx(2 / 3), "token_occurrence_overlap": 0.75,
                        "task_token_types": 3}


def test_prepare_with_the_fixed_vocabulary_measures_overlap_on_it(tmp_path):
    """The smoke run's data with bert-base-uncased's vocabulary: the paper's special ids, and a token overlap
    that says something (a vocabulary learned on these 60 articles covers all but a few of the task's tokens)."""
    from transformers import AutoTokenizer

    from orchestrator.run.prepare import prepare

    fixed = prepare(load_config(SMOKE, [f"tokenizer.vocab={BERT}"]), echo=lambda *_: None, cache_dir=tmp_path)
    special = fixed.arrays.special
    assert (special.pad, special.unk, special.cls, special.sep, special.mask, special.vocab_size) == \
        (0, 100, 101, 102, 103, 30522)
    assert fixed.corpus["vocabulary"] == f"fixed: {BERT}" and fixed.corpus["vocab_size"] == 30522
    learned = prepare(load_config(SMOKE), echo=lambda *_: None, cache_dir=tmp_path)
    assert learned.corpus["vocabulary"] == "learned on the corpus (WordPiece, 2,000 entries)"
    assert learned.corpus["token_overlap"] > 0.99
    assert 0.5 < fixed.corpus["token_overlap"] < learned.corpus["token_overlap"] - 0.05
    assert 0 < fixed.corpus["token_type_overlap"] < fixed.corpus["token_overlap"]
    saved = AutoTokenizer.from_pretrained(str(fixed.tokenizer_dir))  # the run directory's copy loads in transformers
    assert saved("Stocks rallied after the earnings report.")["input_ids"] == \
        fixed_tokenizer(resolve_vocab(BERT, None if fixed.data_root is None else fixed.data_root))(
            "Stocks rallied after the earnings report.")["input_ids"]


# ----------------------------------------------------------------------------------------------
# committee data pull, from local files (the hub is not reachable here)


def test_pull_writes_fewrel_and_the_vocabulary_where_the_presets_read_them(tmp_path, data_root):
    from orchestrator.pull import pull_few_rel, pull_vocab
    from workers.data import loading as wdata

    source = tmp_path / "source"
    source.mkdir()
    for name in ("val_wiki.json", "pid2name.json"):
        shutil.copy(data_root / "few_rel" / name, source / name)
    root = tmp_path / "root"
    url = source.as_uri() + "/{name}"
    # train_wiki.json (the authors' 64 relations) is missing at the source: named, and nothing of it written
    with pytest.raises(DataError, match="could not download .*train_wiki.json"):
        pull_few_rel(root, url, echo=lambda *_: None)
    assert not (root / "few_rel" / "train_wiki.json").exists()
    # a train_wiki.json with the 16 validation relations is refused: few_rel_64 reads 64
    shutil.copy(data_root / "few_rel" / "val_wiki.json", source / "train_wiki.json")
    with pytest.raises(DataError, match="train_wiki.json .* holds 16 relations; preset few_rel_64 reads 64"):
        pull_few_rel(root, url, echo=lambda *_: None)
    assert not (root / "few_rel" / "train_wiki.json").exists()
    task = wdata.load_task(root, "few_rel", 560, 70, None, sample_seed=0)  # the pulled val_wiki.json reads as local
    assert task.num_classes == 16 and len(task.test_labels) == 16 * 70
    assert json.loads((root / "few_rel" / "val_wiki.json").read_text()) == \
        json.loads((data_root / "few_rel" / "val_wiki.json").read_text())

    def local_copy(repo_id: str, filename: str) -> Path:
        assert (repo_id, filename) == ("google-bert/bert-base-uncased", "vocab.txt")
        return data_root / "tokenizers" / BERT / filename

    path = pull_vocab(root, BERT, fetch=local_copy, echo=lambda *_: None)
    assert path == root / "tokenizers" / BERT / "vocab.txt"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == KNOWN_VOCABS[BERT]["sha256"]
    assert resolve_vocab(BERT, root).file == path
    altered = tmp_path / "altered.txt"
    altered.write_bytes(path.read_bytes() + b"extra\n")
    with pytest.raises(DataError, match="not written"):
        pull_vocab(tmp_path / "other", BERT, fetch=lambda *_: altered, echo=lambda *_: None)
    assert not (tmp_path / "other").exists()


def test_few_rel_64_reads_train_wiki_and_checks_its_relation_count(tmp_path, data_root):
    from workers.data import loading as wdata

    root = tmp_path / "root"
    (root / "few_rel").mkdir(parents=True)
    with pytest.raises(DataError, match=r"dataset file missing: .*few_rel/train_wiki.json"):
        wdata.load_task(root, "few_rel_64", 560, 70, None, sample_seed=0)
    shutil.copy(data_root / "few_rel" / "val_wiki.json", root / "few_rel" / "train_wiki.json")
    with pytest.raises(DataError, match=r"holds 16 relations .* but few_rel_64 has 64 \(FewRel 1.0's 64 training"):
        wdata.load_task(root, "few_rel_64", 560, 70, None, sample_seed=0)
    assert load_config(SMOKE, ["task.name=few_rel_64"]).task.name == "few_rel_64"
