"""Code corpora for language modelling: read source files, tokenize, pack, split, memory-map.

    prepare_corpus(out_dir)                       # the Python standard library, byte tokens
    prepare_corpus(out_dir, source="dir", path="~/src/myproject")
    prepare_corpus(out_dir, source="hf", path="bigcode/the-stack-smol")   # or a save_to_disk dir
    tokens = load_split(out_dir, "train")         # np.memmap of token ids

Each document (source file) is tokenized and followed by the end-of-document token; the documents
of a split are concatenated into one flat array `<split>.bin` (raw little-endian integers, dtype in
the manifest). A document goes to train / validation / test by a hash of its path, so the split is
deterministic and stable when files are added or removed. `manifest.json` records what was read
and a sha256 of every packed array, so two runs can check they trained on the same tokens.
"""

import functools
import hashlib
import json
import math
import sys
import sysconfig
from pathlib import Path

import numpy as np

from longnet.io import write_bytes

SPLITS = ("train", "validation", "test")
SOURCES = ("stdlib", "dir", "hf")
TOKENIZERS = ("byte", "cl100k_base")
# each tokenizer's vocabulary, known without loading it (cl100k_base's n_vocab)
VOCAB_SIZES = {"byte": 256, "cl100k_base": 100_277}
# Extensions read from a local directory when none are given: common source languages.
SOURCE_EXTENSIONS = (".py", ".c", ".h", ".cc", ".cpp", ".hpp", ".java", ".js", ".ts", ".go", ".rs",
                     ".rb", ".sh", ".md", ".rst", ".txt")


# ----------------------------------------------------------------------------------------------
# tokenizers


class ByteTokenizer:
    """UTF-8 bytes are the tokens (vocabulary 256). Byte 0 (NUL) ends a document: it never occurs in
    text source files (files that contain it are skipped as binary)."""

    name = "byte"
    vocab_size = 256
    eos_id = 0

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8", errors="replace"))

    def encode_array(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8", errors="replace"), dtype=np.uint8)

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


class TiktokenTokenizer:
    """The paper's tokenizer, cl100k_base, through tiktoken (needs its BPE file: downloaded once by
    tiktoken, or found in TIKTOKEN_CACHE_DIR offline)."""

    def __init__(self, name: str = "cl100k_base"):
        try:
            import tiktoken
        except ImportError as e:
            raise ImportError(f"tokenizer={name!r} needs tiktoken: pip install tiktoken "
                              "(or use tokenizer='byte', which needs nothing)") from e
        try:
            self.enc = tiktoken.get_encoding(name)
        except Exception as e:  # network error, missing cache file, unknown name
            raise RuntimeError(f"tiktoken could not load {name!r} ({e}); it downloads its BPE file "
                               "on first use: run once with network access or set "
                               "TIKTOKEN_CACHE_DIR to a directory holding it") from e
        self.name = name
        self.vocab_size = self.enc.n_vocab
        self.eos_id = self.enc.eot_token

    def encode(self, text: str) -> list[int]:
        return self.enc.encode_ordinary(text)

    def encode_array(self, text: str) -> np.ndarray:
        return np.asarray(self.encode(text), dtype=np.int64)

    def decode(self, ids) -> str:
        return self.enc.decode([int(i) for i in ids])


def get_tokenizer(name: str = "byte"):
    if name == "byte":
        return ByteTokenizer()
    if name == "cl100k_base":
        return TiktokenTokenizer(name)
    raise ValueError(f"tokenizer={name!r} is not known; allowed: {', '.join(TOKENIZERS)}")


def token_dtype(vocab_size: int) -> np.dtype:
    """Smallest unsigned integer type that holds every token id."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise ValueError(f"vocab_size={vocab_size} does not fit in uint32")


# ----------------------------------------------------------------------------------------------
# document sources: each yields (path, text) in a deterministic order


def _read_text(file: Path) -> str | None:
    """The file as text, or None for binary (NUL bytes) or undecodable files."""
    raw = file.read_bytes()
    if b"\x00" in raw:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def iter_directory(root, extensions=SOURCE_EXTENSIONS, exclude_dirs=("site-packages",
                   "dist-packages", "__pycache__", ".git")):
    """(relative path, text) for every source file under root, sorted by path."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"path={str(root)!r} is not a directory")
    files = sorted(f for f in root.rglob("*")
                   if f.suffix in extensions and f.is_file()
                   and not set(f.relative_to(root).parts) & set(exclude_dirs))
    for f in files:
        text = _read_text(f)
        if text:
            yield f.relative_to(root).as_posix(), text


def iter_hf(path, split="train", text_column="content", data_dir=None):
    """(path, text) rows of a Hugging Face dataset: a directory written by `save_to_disk`, or a hub
    name such as "bigcode/the-stack" (streamed; pass data_dir="data/python" for one language).
    The document path is the first column of max_stars_repo_path / path / hexsha that exists, else
    the row number."""
    try:
        import datasets
    except ImportError as e:
        raise ImportError("source='hf' needs the Hugging Face datasets package: "
                          "pip install datasets") from e
    if Path(path).expanduser().is_dir():
        ds = datasets.load_from_disk(str(Path(path).expanduser()))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise ValueError(f"hf_split={split!r} is not in {path}; it has {list(ds)}")
            ds = ds[split]
    else:
        ds = datasets.load_dataset(path, data_dir=data_dir, split=split, streaming=True)
    columns = ds.column_names or []
    if text_column not in columns:
        raise ValueError(f"text_column={text_column!r} is not a column of {path}; "
                         f"columns: {columns}")
    path_column = next((c for c in ("max_stars_repo_path", "path", "hexsha") if c in columns), None)
    for i, row in enumerate(ds):
        text = row[text_column]
        if text:
            yield (str(row[path_column]) if path_column else str(i)), text


# ----------------------------------------------------------------------------------------------
# split, pack, manifest


def split_of(doc_path: str, fractions=(0.9, 0.05, 0.05)) -> str:
    """train / validation / test by a hash of the document path (stable across runs and machines)."""
    u = int.from_bytes(hashlib.sha256(doc_path.encode()).digest()[:8], "big") / 2**64
    if u < fractions[0]:
        return "train"
    return "validation" if u < fractions[0] + fractions[1] else "test"


def unigram_perplexity(train: np.ndarray, test: np.ndarray, vocab_size: int) -> float:
    """Perplexity on `test` of the unigram model fit on `train` (add-one smoothing): the bar every
    trained model must clear by a wide margin."""
    counts = np.bincount(train, minlength=vocab_size).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    return float(np.exp(-logp[test].mean()))


def prepare_corpus(out_dir, source="stdlib", path=None, tokenizer="byte", max_bytes=None,
                   fractions=(0.9, 0.05, 0.05), extensions=SOURCE_EXTENSIONS, hf_split="train",
                   text_column="content", hf_data_dir=None) -> dict:
    """Tokenize a corpus into out_dir/{train,validation,test}.bin + manifest.json; return the manifest.

    source:    "stdlib" (this Python's standard library sources, *.py), "dir" (every file under
               `path` with one of `extensions`) or "hf" (a Hugging Face dataset: `path` is a
               save_to_disk directory or a hub name, rows' `text_column` is the document).
    tokenizer: "byte" (vocabulary 256) or "cl100k_base" (tiktoken, the paper's).
    max_bytes: read about this many bytes of text (None: all), each split its share: a split takes
               documents until it holds its share of max_bytes. Documents are taken in order of
               their path hash, so a cap samples the whole corpus evenly.
    fractions: train / validation / test shares of documents, assigned by path hash.
    """
    if source not in SOURCES:
        raise ValueError(f"source={source!r} is not known; allowed: {', '.join(SOURCES)}")
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-9 or min(fractions) < 0:
        raise ValueError(f"fractions={fractions!r} must be three non-negative shares summing to 1")
    tok = get_tokenizer(tokenizer)
    if source == "stdlib":
        root = stdlib_dir()
        docs = iter_directory(root, extensions=(".py",))
        described_path = str(root)
    elif source == "dir":
        if path is None:
            raise ValueError("source='dir' needs path= (a directory of source files)")
        docs = iter_directory(path, extensions=tuple(extensions))
        described_path = str(Path(path).expanduser().resolve())
    else:
        if path is None:
            raise ValueError("source='hf' needs path= (a save_to_disk directory or a hub name)")
        docs = iter_hf(path, split=hf_split, text_column=text_column, data_dir=hf_data_dir)
        described_path = str(path)

    if max_bytes is not None:
        # Sorting by hash needs the paths up front; the texts are small (a corpus that fits here).
        docs = sorted(docs, key=lambda d: hashlib.sha256(d[0].encode()).digest())
    parts = {s: [] for s in SPLITS}
    stats = {s: {"documents": 0, "bytes": 0} for s in SPLITS}
    eos = np.array([tok.eos_id], dtype=np.int64)
    budget = {s: (f * max_bytes if max_bytes is not None else math.inf)
              for s, f in zip(SPLITS, fractions)}
    for doc_path, text in docs:
        s = split_of(doc_path, fractions)
        if stats[s]["bytes"] >= budget[s]:
            if all(stats[t]["bytes"] >= budget[t] for t in SPLITS):
                break
            continue
        n_bytes = len(text.encode("utf-8", errors="replace"))
        parts[s] += [tok.encode_array(text), eos]
        stats[s]["documents"] += 1
        stats[s]["bytes"] += n_bytes
    if stats["train"]["documents"] == 0:
        raise ValueError(f"no training documents found in {described_path} "
                         f"(source={source!r}, max_bytes={max_bytes})")

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dtype = token_dtype(tok.vocab_size)
    arrays = {}
    for s in SPLITS:
        arr = (np.concatenate(parts[s]) if parts[s] else np.zeros(0, np.int64)).astype(dtype)
        arrays[s] = arr
        data = arr.astype(dtype.newbyteorder("<")).tobytes()
        write_bytes(data, out_dir / f"{s}.bin")
        stats[s].update(tokens=int(arr.size), sha256=hashlib.sha256(data).hexdigest(),
                        file=f"{s}.bin")
    manifest = {
        "source": source,
        "path": described_path,
        "tokenizer": tok.name,
        "vocab_size": tok.vocab_size,
        "eos_id": tok.eos_id,
        "dtype": dtype.name,
        "split_rule": f"sha256(path) fractions train/validation/test = {list(fractions)}",
        "max_bytes": max_bytes,
        "python_version": sys.version.split()[0],
        "unigram_test_perplexity": (unigram_perplexity(arrays["train"], arrays["test"],
                                                       tok.vocab_size)
                                    if arrays["test"].size else None),
        "splits": stats,
    }
    write_bytes(json.dumps(manifest, indent=2).encode(), out_dir / "manifest.json")
    return manifest


def read_manifest(data_dir) -> dict:
    path = Path(data_dir) / "manifest.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run longnet.data.prepare_corpus first")
    return json.loads(path.read_text())


def corpus_identity(manifest: dict) -> dict:
    """What a model trained on a corpus depends on: its tokenizer, vocabulary and the sha256 of
    every split's tokens. Two manifests with the same identity hold the same tokens."""
    return {"tokenizer": manifest["tokenizer"], "vocab_size": manifest["vocab_size"],
            "splits": {s: manifest["splits"][s]["sha256"] for s in SPLITS}}


def check_same_corpus(recorded: dict, data_dir, what: str) -> None:
    """Refuse (ValueError naming both) when `what` (a checkpoint, say) records a corpus other than
    the one in data_dir: a model trained on one corpus is never scored on, or resumed with,
    another."""
    if corpus_identity(recorded) != corpus_identity(read_manifest(data_dir)):
        raise ValueError(f"{what} was trained on another corpus than {data_dir} holds (its "
                         "manifest's tokenizer, vocabulary or split sha256 differ): train it "
                         "again on this corpus")


@functools.lru_cache(maxsize=16)
def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    """A file's sha256, computed once per (path, size, mtime): a job that reads a split twice
    (evaluation's perplexity and context window) hashes it once."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_split(data_dir, split="train", verify: bool = False) -> np.memmap:
    """The packed tokens of one split, memory-mapped read-only; a file whose size is not the
    manifest's token count (cut, or from another corpus) is refused, naming it, and with verify
    one whose sha256 is not the manifest's (training and evaluation verify what they read: one
    pass over the file, about a second per GB)."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not known; allowed: {', '.join(SPLITS)}")
    manifest = read_manifest(data_dir)
    n = manifest["splits"][split]["tokens"]
    if n == 0:
        raise ValueError(f"split {split!r} of {data_dir} is empty; use a larger corpus")
    path, dtype = Path(data_dir) / f"{split}.bin", np.dtype(manifest["dtype"]).newbyteorder("<")
    size = path.stat().st_size if path.exists() else None
    if size != n * dtype.itemsize:
        raise ValueError(f"{path}: {size} bytes where its manifest records {n} tokens of "
                         f"{dtype.itemsize} bytes ({n * dtype.itemsize}): the corpus is damaged; "
                         "delete the data directory and rerun to tokenize it again")
    if verify and _sha256(path, size, path.stat().st_mtime_ns) != manifest["splits"][split]["sha256"]:
        raise ValueError(f"{path}: its sha256 is not the one its manifest records: the "
                         "corpus is damaged; delete the data directory and rerun to tokenize "
                         "it again")
    return np.memmap(path, dtype=dtype, mode="r", shape=(n,))
