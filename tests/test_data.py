"""Corpus preparation: sources, tokenizers, deterministic split, packed arrays and manifest."""
import hashlib
import json
import sys

import numpy as np
import pytest

from longnet.data import (ByteTokenizer, get_tokenizer, load_split, prepare_corpus, read_manifest,
                          split_of, stdlib_dir, unigram_perplexity)


def write_tree(root, n=40):
    """n small Python files in two folders, plus a binary file and a non-source file to skip."""
    for i in range(n):
        folder = root / ("pkg_a" if i % 2 else "pkg_b")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"mod_{i}.py").write_text(f"def f{i}(x):\n    return x * {i}  # é\n")
    (root / "blob.py").write_bytes(b"\x00\x01binary")
    (root / "image.png").write_bytes(b"not source")
    return root


def docs_of(tokens, eos):
    text = bytes(tokens).split(bytes([eos]))
    return sorted(t.decode() for t in text if t)


def test_directory_corpus_packs_every_file_once_into_one_split(tmp_path):
    src = write_tree(tmp_path / "src")
    manifest = prepare_corpus(tmp_path / "out", source="dir", path=src)
    assert manifest["vocab_size"] == 256 and manifest["dtype"] == "uint8"
    splits = {s: load_split(tmp_path / "out", s) for s in ("train", "validation", "test")
              if manifest["splits"][s]["tokens"]}
    found = sorted(d for tokens in splits.values() for d in docs_of(tokens, manifest["eos_id"]))
    expected = sorted(f.read_text() for f in src.rglob("mod_*.py"))
    assert found == expected  # the binary and the .png are skipped, every module is there once
    assert sum(manifest["splits"][s]["documents"] for s in splits) == 40
    for s, tokens in splits.items():  # the manifest's hash is the hash of the packed file
        assert manifest["splits"][s]["sha256"] == hashlib.sha256(tokens.tobytes()).hexdigest()
    assert read_manifest(tmp_path / "out") == json.loads(json.dumps(manifest))
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_split_is_by_path_hash_and_stable_when_files_are_added(tmp_path):
    src = write_tree(tmp_path / "src", n=30)
    first = prepare_corpus(tmp_path / "a", source="dir", path=src)
    again = prepare_corpus(tmp_path / "b", source="dir", path=src)
    assert first["splits"] == again["splits"]  # deterministic, sha256 included
    (src / "pkg_a" / "zz_new.py").write_text("y = 1\n")
    grown = prepare_corpus(tmp_path / "c", source="dir", path=src)
    new_split = split_of("pkg_a/zz_new.py")
    for s in ("train", "validation", "test"):
        added = 1 if s == new_split else 0
        assert grown["splits"][s]["documents"] == first["splits"][s]["documents"] + added
    # roughly the requested shares over many paths
    shares = [split_of(f"file_{i}.py") for i in range(4000)]
    assert abs(shares.count("train") / 4000 - 0.9) < 0.02


def test_stdlib_corpus_with_byte_cap(tmp_path):
    manifest = prepare_corpus(tmp_path, max_bytes=200_000)
    assert manifest["source"] == "stdlib" and manifest["path"] == str(stdlib_dir())
    for s, share in zip(manifest["splits"], (0.9, 0.05, 0.05)):  # each split about its share
        assert share * 200_000 <= manifest["splits"][s]["bytes"] < share * 200_000 + 1_000_000
    assert manifest["python_version"] == sys.version.split()[0]
    train = load_split(tmp_path, "train")
    assert isinstance(train, np.memmap) and train.size == manifest["splits"]["train"]["tokens"]
    # source code is far from uniform bytes, and a unigram model is a weak but real baseline
    assert 10 < manifest["unigram_test_perplexity"] < 60


def test_hf_dataset_saved_to_disk(tmp_path):
    datasets = pytest.importorskip("datasets", reason="the hf loader needs `datasets` installed")
    rows = {"content": [f"print({i})\n" for i in range(30)],
            "max_stars_repo_path": [f"repo/file_{i}.py" for i in range(30)],
            "lang": ["Python"] * 30}
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "ds"))
    manifest = prepare_corpus(tmp_path / "out", source="hf", path=tmp_path / "ds")
    found = sorted(d for s in ("train", "validation", "test") if manifest["splits"][s]["tokens"]
                   for d in docs_of(load_split(tmp_path / "out", s), manifest["eos_id"]))
    assert found == sorted(rows["content"])
    # documents are split by their repository path, as for local files
    for i in range(30):
        path = f"repo/file_{i}.py"
        assert f"print({i})\n" in docs_of(load_split(tmp_path / "out", split_of(path)), 0)
    with pytest.raises(ValueError, match="text_column='text' is not a column"):
        prepare_corpus(tmp_path / "bad", source="hf", path=tmp_path / "ds", text_column="text")


def test_tokenizers_and_clear_errors(tmp_path, monkeypatch):
    tok = ByteTokenizer()
    assert tok.decode(tok.encode("naïve = 1")) == "naïve = 1"
    monkeypatch.setitem(sys.modules, "tiktoken", None)  # as if not installed
    with pytest.raises(ImportError, match="pip install tiktoken"):
        get_tokenizer("cl100k_base")
    with pytest.raises(ValueError, match="allowed: byte, cl100k_base"):
        get_tokenizer("gpt2")
    with pytest.raises(ValueError, match="allowed: stdlib, dir, hf"):
        prepare_corpus(tmp_path, source="web")
    with pytest.raises(ValueError, match="needs path="):
        prepare_corpus(tmp_path, source="dir")
    with pytest.raises(FileNotFoundError, match="not a directory"):
        prepare_corpus(tmp_path, source="dir", path=tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="prepare_corpus"):
        load_split(tmp_path / "nothing", "train")


def test_unigram_perplexity():
    uniform = np.arange(256, dtype=np.uint8).repeat(100)
    assert unigram_perplexity(uniform, uniform, 256) == pytest.approx(256)
    skewed = np.array([1] * 990 + [2] * 10, dtype=np.uint8)
    assert unigram_perplexity(skewed, skewed, 256) < 2
