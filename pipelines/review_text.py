"""Per-user review-text features for fake-review rings: how closely a user's review texts match
the review texts of OTHER accounts, as of a point in time.

    features = review_text_features(events, end, params)

What "similar" means here depends on `model`:
- `lexical` (the default): near-duplicates in spelling. A text is represented by its character
  3-5-grams within words, hashed (computed with NumPy, nothing to download), rows
  L2-normalised, and compared by cosine. "Amazing product, must buy!" and "AMAZING product must
  buy" are the same text; "wow amazing product must buy" is a near-duplicate; "great item, I
  recommend it" is not similar at all, although it says the same thing. That is what a ring
  posting one template with small edits leaves behind.
- `wordllama`: near-duplicates in meaning, from a small semantic embedding whose weights ship
  inside its PyPI package (`semantic_embed`), loaded offline. "Wonderful purchase, top quality,
  will buy again" and "Brilliant purchase, top quality, will buy again" are at cosine 0.94
  (lexically 0.75, below min_similarity): a ring that rewords its template is still one family.
  The same thresholds apply.
Any other embedding plugs in as `embed=` (one L2-normalised row per text, scipy sparse or dense).

How, so that it scales (1M users, ~250k reviews) without an all-pairs matrix:

1. Reviews (event_type "review", review_text not NULL, event_time < end) are normalised:
   lowercase, every run of characters that are not letters or digits becomes one space, trimmed.
   A text left empty ("!!!") is ignored. Equal normalised texts are grouped exactly and the
   distinct accounts per text counted: a ring posting one template is caught here, cheaply and
   exactly (similarity 1).
2. Only the DISTINCT normalised texts are embedded, and pairs with cosine >= `min_similarity`
   are looked for with MinHash locality-sensitive hashing over each text's set of hashed
   n-grams: `lsh_bands` bands of `lsh_rows` MinHash values (one-permutation hashing, four bands
   per pass over the n-grams); two texts are a candidate when they agree on a whole band, and
   every candidate's exact cosine is computed from the full rows. Cost grows with the number
   of n-grams and of candidates, never with texts squared; in a bucket of texts agreeing on a
   band each text is paired with at most `max_bucket` others. This is the approximation:
   measured against brute force on the simulator at 100k users (19.6k distinct texts), 99 % of
   the pairs at cosine >= 0.9 and 67 % of those at >= 0.8 are found (benchmarks/
   bench_review_text.py --recall); exact duplicates (step 1) are always found.
   A dense embedding (wordllama) is searched by cells instead (`_similar_pairs_cells`: k-means
   cells of about `ann_cluster_size` texts, each text filed under its `ann_probes` nearest,
   texts sharing a cell compared exactly): at 100k users 100 % of the pairs at >= 0.9 and
   99.9 % of those at >= 0.8 are found.
3. Per (text, account): the best match among texts written by another account; per user: the
   aggregates below.

Columns (one row per user with at least one such review; floats, like the other features):

    user_id
    review_texts                    the user's reviews with a (non-empty) text before `end`
    max_review_similarity_other     the highest cosine of any of them to a text of another
                                    account (1.0: the same normalised text); 0.0 when nothing
                                    reaches min_similarity (lower similarities are not searched)
    near_duplicate_review_share     share of them whose best match in another account is
                                    >= near_duplicate_threshold
    accounts_sharing_review_text    the most other accounts that posted the same text or a
                                    near-duplicate (>= near_duplicate_threshold) of one of them

An account repeating its own text is not similar to "other accounts". Output is deterministic
(sorted by user_id; distinct texts are processed in sorted order, values rounded to 6 decimals)
and does not depend on the order of the input rows.
"""
from __future__ import annotations

import functools
import os
import sys
from typing import Any, Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import scipy.sparse as sp

from pipelines.errors import UserError

DEFAULTS: dict[str, Any] = {
    "near_duplicate_threshold": 0.9,  # cosine at or above which two texts count as near-duplicates
    "min_similarity": 0.8,  # pairs below this are not searched (their similarity is reported as 0)
    "lsh_bands": 32,  # MinHash bands ...
    "lsh_rows": 8,  # ... of this many values each: a pair is a candidate when one band agrees
    "max_bucket": 50,  # in a band bucket, each text is paired with at most this many others
    "chunk_rows": 2048,  # dense embeddings: texts per block of a product of vectors
    "model": "lexical",  # lexical (embed) | wordllama (semantic_embed: needs the wordllama package)
    "ann_cluster_size": 256,  # dense embeddings: texts per k-means cell of the search, on average ...
    "ann_probes": 3,  # ... and the nearest cells each text is filed under (two texts sharing one are compared)
}
_SEED = 0x7E7_5EED
_FEATURE_BITS = 20  # embed: 2**20 hashed n-gram features
_NGRAM_MULTIPLIER = np.uint64(0x100000001B3)  # FNV-1a's prime: a polynomial hash of the n-gram's characters
_EMBED_CHUNK = 20_000  # texts per embed pass: a few hundred MB of n-grams at most
_KMEANS_SAMPLE = 50_000  # rows the cells' centroids are fitted on, at most
_KMEANS_ITERATIONS = 8
_BANDS_PER_RUN = 4  # bands per one-permutation pass (at least): few bins, so short texts fill most
COLUMNS = ["user_id", "review_texts", "max_review_similarity_other", "near_duplicate_review_share",
           "accounts_sharing_review_text"]
_NEEDED = ["user_id", "event_time", "event_type", "review_text"]
_DECIMALS = 6
_TOLERANCE = 1e-6  # float32 cosines: a pair exactly at a threshold may come out a hair below it

Embedding = Callable[[list[str]], Any]


def embed(texts: list[str]) -> sp.csr_matrix:
    """One L2-normalised row per text: the counts of its character 3-5-grams within word
    boundaries (each word padded with a space on both sides, as scikit-learn's `char_wb`
    analyzer cuts them), hashed into 2**20 features. Lexical, not semantic: it measures shared
    spelling, so a reworded review with the same meaning is not similar. `texts` are normalised
    as _reviews leaves them (letters, digits and single spaces).

    Computed with NumPy, _EMBED_CHUNK texts a pass (vectorised over them): scikit-learn's
    HashingVectorizer, which this replaced, cuts and hashes each n-gram in Python and took
    2.3 s for the 19.6k distinct texts of the simulator at 100k users (and 1.3 s to import),
    this 0.7 s; the cosines of the pairs it finds differ by at most 0.005 (other hash
    collisions).

    Another embedding plugs in beside it (`semantic_embed`, or review_text_features(embed=)):
    any function that returns one L2-normalised row per text (scipy sparse matrix or dense numpy
    array, same order) works. A sparse one is searched by MinHash, a dense one by cells."""
    parts = [_embed_chunk(texts[start:start + _EMBED_CHUNK]) for start in range(0, len(texts), _EMBED_CHUNK)]
    if not parts:
        return sp.csr_matrix((0, 2 ** _FEATURE_BITS), dtype=np.float32)
    return parts[0] if len(parts) == 1 else sp.vstack(parts, format="csr")


def _embed_chunk(texts: list[str]) -> sp.csr_matrix:
    """embed's rows for `texts`. The texts are laid end to end with one space between them and
    one at each end; an n-gram is kept where no space lies strictly inside it, which is exactly
    the n-grams of the space-padded words. Its hash is polynomial in its characters, then mixed;
    the top _FEATURE_BITS bits are its feature."""
    stream = np.frombuffer((" " + "\x00".join(texts) + " ").encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    separator = stream == 0
    text_of = np.cumsum(separator)  # at position i: the text it belongs to (a separator starts the next)
    stream[separator] = 32
    spaces = np.cumsum(stream == 32)
    rows, columns = [], []
    h = stream
    for n in range(2, 6):
        with np.errstate(over="ignore"):
            h = h[:-1] * _NGRAM_MULTIPLIER + stream[n - 1:]  # h[i]: stream[i:i + n]
        if n < 3:
            continue
        starts = np.flatnonzero(spaces[n - 2:n - 2 + len(h)] == spaces[:len(h)])  # none in i+1 .. i+n-2
        rows.append(text_of[starts + 1].astype(np.int32))
        columns.append((_mix64(h[starts]) >> np.uint64(64 - _FEATURE_BITS)).astype(np.int32))
    row, column = np.concatenate(rows), np.concatenate(columns)
    X = sp.csr_matrix((np.ones(len(row), dtype=np.float32), (row, column)), shape=(len(texts), 2 ** _FEATURE_BITS))
    X.sum_duplicates()  # counts, indices sorted
    row_of = np.repeat(np.arange(len(texts)), np.diff(X.indptr))
    norms = np.sqrt(np.bincount(row_of, weights=X.data.astype(np.float64) ** 2, minlength=len(texts)))
    X.data /= norms[row_of].astype(np.float32)
    return X


@functools.lru_cache(maxsize=1)
def _wordllama():
    """WordLlama's bundled model (256 dimensions, 16 MB of weights inside the wheel), loaded
    from the package's own folder with downloads disabled: its plain `load()` looks for the
    bundled tokenizer in another folder and would fetch it from huggingface.co."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the Rust tokenizer, in forked workers
    try:
        import wordllama
    except ImportError:
        raise UserError("features.review_text.model wordllama needs the wordllama package: "
                        "pip install -c constraints.txt 'wordllama==0.4.0.post1', or set model: lexical") from None
    from pathlib import Path

    return wordllama.WordLlama.load(cache_dir=Path(wordllama.__file__).parent, disable_download=True)


def semantic_embed(texts: list[str]) -> np.ndarray:
    """One L2-normalised float32 row of 256 per text, from WordLlama (PyPI `wordllama`, MIT): the
    mean of its tokens' embeddings (trained from a large language model's). Semantic where
    `embed` is lexical: "great product highly recommend" and "excellent item strongly
    recommended" come out at cosine 0.60, "the zip broke after two days" at 0.02-0.07 from either.
    Loaded on first use, offline; a pass over 20k short texts takes under a second."""
    if not texts:
        return np.zeros((0, 256), dtype=np.float32)
    return np.ascontiguousarray(_wordllama().embed(texts, norm=True, batch_size=1024), dtype=np.float32)


_EMBEDDINGS: dict[str, Embedding] = {"lexical": embed, "wordllama": semantic_embed}  # by params["model"]


def empty_frame() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in COLUMNS[1:]})
    frame.insert(0, "user_id", pd.array([], dtype="str"))
    return frame


def review_text_features(events: Any, end: pd.Timestamp, params: dict[str, Any] | None = None, *,
                         embed: Embedding | None = None) -> pd.DataFrame:
    """The columns of the module docstring, one row per user with a review text before `end`.

    `events`: a pyarrow Table (or pandas DataFrame) or a Parquet file path, with user_id,
    event_time, event_type and, optionally, review_text. Without a review_text column, or with
    it NULL everywhere, the result is empty (for a Parquet file, decided from its metadata).
    `end`: a timestamp (UTC; a naive one is read as UTC); only events strictly before it count.
    attrs["review_text"] holds what the search did (distinct texts, candidate pairs, ...).
    `embed` replaces the one params["model"] names (module docstring)."""
    p = {**DEFAULTS, **(params or {})}
    if p["model"] not in _EMBEDDINGS:
        raise UserError(f"review text: model must be one of {', '.join(_EMBEDDINGS)}, not {p['model']!r}")
    threshold, floor = float(p["near_duplicate_threshold"]), float(p["min_similarity"])
    if not 0.0 < floor <= threshold <= 1.0:
        raise UserError(f"review text: need 0 < min_similarity ({floor}) <= near_duplicate_threshold "
                        f"({threshold}) <= 1")
    for name in ("lsh_bands", "lsh_rows", "max_bucket", "chunk_rows", "ann_cluster_size", "ann_probes"):
        if not isinstance(p[name], (int, np.integer)) or isinstance(p[name], bool) or p[name] < 1:
            raise UserError(f"review text: {name} must be a whole number >= 1, not {p[name]!r}")
    end = pd.Timestamp(end)
    end = end.tz_localize("UTC") if end.tzinfo is None else end.tz_convert("UTC")
    table = _reviews(events, end)
    if table is None or table.num_rows == 0:
        return empty_frame()
    return _features(table, threshold, floor, p, embed or _EMBEDDINGS[p["model"]])


# ----------------------------------------------------------------------------- reading


def _reviews(events: Any, end: pd.Timestamp) -> pa.Table | None:
    """user_id and normalised text of the reviews with a text before `end`; None when the log
    has no review text at all (checked before reading any data)."""
    if isinstance(events, (str, os.PathLike)):
        meta = pq.ParquetFile(events)
        names = meta.schema_arrow.names
        if "review_text" not in names:
            return None
        j = names.index("review_text")
        md = meta.metadata
        stats = [md.row_group(g).column(j).statistics for g in range(md.num_row_groups)]
        if all(s is not None and s.has_null_count and s.null_count == md.row_group(g).num_rows
               for g, s in enumerate(stats)):
            return None
        source = ds.dataset(str(events), format="parquet")
    else:
        if isinstance(events, pd.DataFrame):
            if "review_text" not in events.columns:
                return None
            events = pa.Table.from_pandas(events[[c for c in _NEEDED if c in events.columns]], preserve_index=False)
        if "review_text" not in events.column_names:
            return None
        if events.column("review_text").null_count == events.num_rows:
            return None
        source = ds.dataset(events.select([c for c in _NEEDED if c in events.column_names]))
    missing = [c for c in _NEEDED if c not in source.schema.names]
    if missing:
        raise UserError(f"review text features: the events lack column(s) {', '.join(missing)}")
    time_type = source.schema.field("event_time").type
    if not pa.types.is_timestamp(time_type):
        raise UserError(f"review text features: event_time is {time_type}, not a timestamp; clean the events first")
    cutoff = pa.scalar(end.to_pydatetime() if time_type.tz else end.tz_localize(None).to_pydatetime(),
                       type=pa.timestamp("us", time_type.tz))
    keep = (ds.field("event_type") == "review") & ds.field("review_text").is_valid() & \
        (ds.field("event_time").cast(pa.timestamp("us", time_type.tz)) < cutoff)
    table = source.to_table(columns=["user_id", "review_text"], filter=keep)
    text = pc.cast(table.column("review_text"), pa.large_string())
    text = pc.utf8_trim_whitespace(pc.replace_substring_regex(pc.utf8_lower(text), r"[^\p{L}\p{N}]+", " "))
    users = pc.cast(table.column("user_id"), pa.large_string())
    out = pa.table({"user_id": users, "text": text})
    return out.filter(pc.greater(pc.utf8_length(out.column("text")), 0))


# ----------------------------------------------------------------------------- features


def _codes(values: pa.ChunkedArray) -> tuple[pa.Array, np.ndarray]:
    """(sorted distinct values, code of each value): sorted so that the codes, and every tie
    broken by them, do not depend on the order of the rows."""
    distinct = pc.unique(values)
    distinct = distinct.take(pc.sort_indices(distinct))
    return distinct, pc.index_in(values, value_set=distinct).to_numpy().astype(np.int64)


def _features(table: pa.Table, threshold: float, floor: float, p: dict[str, Any], embed: Embedding) -> pd.DataFrame:
    user_names, user = _codes(table.column("user_id"))
    texts, text = _codes(table.column("text"))
    T = len(texts)
    # distinct (text, account) pairs: who wrote each distinct text
    pairs = np.unique(text * len(user_names) + user)
    p_text, p_user = pairs // len(user_names), pairs % len(user_names)
    n_accounts = np.bincount(p_text, minlength=T)
    owner = np.full(T, -1, dtype=np.int64)  # the one account of a text written by one account
    single = n_accounts[p_text] == 1
    owner[p_text[single]] = p_user[single]

    X = embed(texts.to_pylist())
    if sp.issparse(X):
        a, b, s, stats = _similar_pairs_sparse(sp.csr_matrix(X, dtype=np.float32), floor, int(p["lsh_bands"]),
                                               int(p["lsh_rows"]), int(p["max_bucket"]), 50_000)
    else:
        a, b, s, stats = _similar_pairs_cells(np.asarray(X, dtype=np.float32), floor, int(p["ann_cluster_size"]),
                                              int(p["ann_probes"]), int(p["chunk_rows"]))
    # both directions
    a, b, s = np.concatenate([a, b]), np.concatenate([b, a]), np.concatenate([s, s])

    # best match per text among texts written by ANOTHER account: a text written by two or more
    # accounts matches itself (1.0) for each of them; a neighbour text counts unless its only
    # writer is the one writer of this text
    best = np.where(n_accounts >= 2, 1.0, 0.0)
    other = (n_accounts[b] >= 2) | (owner[b] != owner[a]) | (n_accounts[a] >= 2)
    np.maximum.at(best, a[other], s[other])

    # accounts behind each text's near-duplicate family (the text and its neighbours >= threshold)
    near = s >= threshold - _TOLERANCE
    fam_text = np.concatenate([np.arange(T), a[near]])
    fam_of = np.concatenate([np.arange(T), b[near]])
    first = np.searchsorted(p_text, np.arange(T + 1))  # the pairs are sorted by text
    counts = first[fam_of + 1] - first[fam_of]
    fam_rows = np.repeat(fam_text, counts)
    starts = np.repeat(first[fam_of], counts)
    within = np.arange(len(fam_rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    fam_users = p_user[starts + within]
    family = np.unique(fam_rows * len(user_names) + fam_users) // len(user_names)
    family_accounts = np.bincount(family, minlength=T)  # includes the writer

    # per user, over every review (a repeated review counts each time)
    U = len(user_names)
    n_reviews = np.bincount(user, minlength=U).astype(np.float64)
    max_sim = np.zeros(U)
    np.maximum.at(max_sim, user, best[text])
    near_share = np.bincount(user, weights=(best[text] >= threshold - _TOLERANCE).astype(np.float64), minlength=U) / n_reviews
    sharing = np.zeros(U)
    np.maximum.at(sharing, user, (family_accounts[text] - 1).astype(np.float64))
    frame = pd.DataFrame({
        "review_texts": n_reviews,
        "max_review_similarity_other": np.round(np.clip(max_sim, 0.0, 1.0), _DECIMALS),
        "near_duplicate_review_share": np.round(near_share, _DECIMALS),
        "accounts_sharing_review_text": sharing,
    })
    frame.insert(0, "user_id", pd.array(user_names.to_numpy(zero_copy_only=False), dtype="str"))
    frame.attrs["review_text"] = {"reviews": int(len(text)), "distinct_texts": int(T),
                                  "texts_with_several_accounts": int((n_accounts >= 2).sum()), **stats}
    return frame


# ----------------------------------------------------------------------------- similarity search


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a well-spread uint64 hash of uint64 keys (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = np.asarray(x, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _minhash(X: sp.csr_matrix, runs: int, bins: int) -> np.ndarray:
    """(rows, runs * bins) uint32 one-permutation MinHash of each row's set of features: per run,
    every feature is hashed once (multiply-shift on a mixed feature number), the top bits pick
    one of `bins` bins (a power of two) and the smallest value per bin is kept; an empty bin
    (short texts) borrows the value of the next non-empty bin to its right, mixed with the
    distance, so two rows agree on a bin with probability close to their Jaccard similarity."""
    T = X.shape[0]
    shift = np.uint64(64 - int(bins).bit_length() + 1)
    base = _mix64(X.indices.astype(np.uint64) ^ np.uint64(_SEED))
    row = np.repeat(np.arange(T, dtype=np.uint64) * np.uint64(bins), np.diff(X.indptr))
    empty = np.uint32(0xFFFFFFFF)
    out = np.empty((T, runs * bins), dtype=np.uint32)
    high = 1 if sys.byteorder == "little" else 0  # the upper 32 bits of each uint64
    for r in range(runs):
        multiplier = _mix64(np.array([_SEED + r], dtype=np.uint64)) | np.uint64(1)  # odd
        with np.errstate(over="ignore"):
            h = base * multiplier
        sig = np.full(T * bins, empty, dtype=np.uint32)
        # the value kept is the hash's upper half, whose top bits are the bin's (the same for
        # every value in a bin): a strided view, and unsigned index arithmetic, copy nothing
        bin_of = h >> shift
        bin_of += row
        np.minimum.at(sig, bin_of, h.view(np.uint32)[high::2])
        sig = sig.reshape(T, bins)
        filled = sig != empty
        if not filled.all():
            col = np.where(filled, np.arange(bins), 2 * bins)
            twice = np.concatenate([col, col + bins], axis=1)  # circular: the next bin may wrap round
            nxt = np.minimum.accumulate(twice[:, ::-1], axis=1)[:, ::-1][:, :bins]
            rows, cols = np.nonzero(~filled)
            src = nxt[rows, cols]
            dist = (src - cols).astype(np.uint64)
            borrowed = sig[rows, src % bins].astype(np.uint64)
            sig[rows, cols] = (_mix64((borrowed << np.uint64(16)) | dist) >> np.uint64(32)).astype(np.uint32)
        out[:, r * bins:(r + 1) * bins] = sig
    return out


def _rows(X: sp.csr_matrix, idx: np.ndarray) -> sp.csr_matrix:
    """X[idx] (rows may repeat), gathered with numpy: several times faster than scipy's indexing."""
    starts = X.indptr[idx].astype(np.int64)
    lengths = X.indptr[idx + 1].astype(np.int64) - starts
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    pos = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1])
    return sp.csr_matrix((X.data[pos], X.indices[pos], indptr), shape=(len(idx), X.shape[1]))


def _similar_pairs_sparse(X: sp.csr_matrix, floor: float, bands: int, rows: int, max_bucket: int,
                          chunk_pairs: int):
    """Pairs (i < j) of rows of X (L2-normalised) with cosine >= floor: candidates from MinHash
    bands (module docstring, step 2), then each candidate's exact cosine: (i, j, cosine, stats)."""
    X.sum_duplicates()
    X.sort_indices()
    T = X.shape[0]
    # bins per run: the power of two that holds _BANDS_PER_RUN bands
    bins = 1 << max(int(_BANDS_PER_RUN * rows - 1).bit_length(), 1)
    per_run = bins // rows
    sig = _minhash(X, -(-bands // per_run), bins)
    cand = []
    largest = 0
    for band in range(bands):
        key = _mix64(np.full(T, band, dtype=np.uint64))
        first = (band // per_run) * bins + (band % per_run) * rows
        for c in range(first, first + rows):
            key = _mix64(key ^ sig[:, c].astype(np.uint64))
        order = np.argsort(key, kind="stable")
        ks = key[order]
        same = ks[1:] == ks[:-1]
        if not same.any():
            continue
        # run id per position; pairs within a run, each element with up to max_bucket next ones
        run_start = np.flatnonzero(np.r_[True, ~same])
        run_len = np.diff(np.r_[run_start, T])
        largest = max(largest, int(run_len.max()))
        run_of = np.repeat(np.arange(len(run_start)), run_len)
        for d in range(1, min(int(run_len.max()), max_bucket + 1)):
            pos = np.flatnonzero(run_of[d:] == run_of[:-d])
            if len(pos) == 0:
                break
            i, j = order[pos], order[pos + d]
            cand.append(np.minimum(i, j) * T + np.maximum(i, j))
    pairs = np.unique(np.concatenate(cand)) if cand else np.zeros(0, dtype=np.int64)
    out_a, out_b, out_s = [], [], []
    for start in range(0, len(pairs), chunk_pairs):
        part = pairs[start:start + chunk_pairs]
        i, j = part // T, part % T
        cos = np.asarray(_rows(X, i).multiply(_rows(X, j)).sum(axis=1)).ravel()
        good = cos >= floor - _TOLERANCE
        out_a.append(i[good])
        out_b.append(j[good])
        out_s.append(np.minimum(cos[good], 1.0))
    a, b, s = _cat(out_a, np.int64), _cat(out_b, np.int64), _cat(out_s, np.float64)
    stats = {"candidate_pairs": int(len(pairs)), "similar_pairs": int(len(a)), "largest_bucket": largest}
    return a, b, s, stats


def _similar_pairs_dense(X: np.ndarray, floor: float, chunk_rows: int):
    """Pairs (i < j) of rows of X (L2-normalised) with cosine >= floor, by chunked brute force."""
    T = len(X)
    out_a, out_b, out_s = [], [], []
    for start in range(0, T, chunk_rows):
        S = X[start:start + chunk_rows] @ X.T
        i, j = np.nonzero(S >= floor - _TOLERANCE)
        i = i + start
        upper = j > i
        out_a.append(i[upper])
        out_b.append(j[upper])
        out_s.append(np.minimum(S[i[upper] - start, j[upper]].astype(np.float64), 1.0))
    a, b, s = _cat(out_a, np.int64), _cat(out_b, np.int64), _cat(out_s, np.float64)
    return a, b, s, {"candidate_pairs": T * (T - 1) // 2, "similar_pairs": int(len(a))}


def _similar_pairs_cells(X: np.ndarray, floor: float, cell_size: int, probes: int, chunk_rows: int):
    """Pairs (i < j) of rows of X (L2-normalised) with cosine >= floor, searched by cells (an
    inverted file, as in FAISS's IVF): spherical k-means cuts the rows into ceil(T / cell_size)
    cells, each row is filed under its `probes` nearest centroids, and every two rows filed
    under one cell are compared exactly. Two similar rows are nearly always near the same
    centroids, so cost grows with T x cell_size instead of T^2 (one cell: brute force)."""
    T = len(X)
    cells = -(-T // cell_size)
    if cells <= 1:
        a, b, s, stats = _similar_pairs_dense(X, floor, chunk_rows)
        return a, b, s, {**stats, "cells": 1, "largest_cell": int(T)}
    centroids = _spherical_kmeans(X, cells, chunk_rows)
    probes = min(probes, cells)
    member, cell = [], []
    for start in range(0, T, chunk_rows):
        nearest = np.argpartition(-(X[start:start + chunk_rows] @ centroids.T), probes - 1, axis=1)[:, :probes]
        member.append(np.repeat(np.arange(start, start + len(nearest)), probes))
        cell.append(nearest.ravel())
    member, cell = np.concatenate(member), np.concatenate(cell)
    order = np.lexsort((member, cell))
    member, cell = member[order], cell[order]
    bounds = np.searchsorted(cell, np.arange(cells + 1))
    out_key, out_s = [], []
    compared = 0
    for c in range(cells):
        rows = member[bounds[c]:bounds[c + 1]]  # ascending
        m = len(rows)
        if m < 2:
            continue
        compared += m * (m - 1) // 2
        Xc = X[rows]
        for start in range(0, m, chunk_rows):
            S = Xc[start:start + chunk_rows] @ Xc.T
            i, j = np.nonzero(S >= floor - _TOLERANCE)
            upper = j > i + start
            i, j = i[upper], j[upper]
            out_key.append(rows[i + start] * T + rows[j])
            out_s.append(S[i, j])
    key, s = _cat(out_key, np.int64), _cat(out_s, np.float64)
    key, first = np.unique(key, return_index=True)  # a pair filed together in two cells: once
    s = np.minimum(s[first], 1.0)
    sizes = np.diff(bounds)
    return key // T, key % T, s, {"candidate_pairs": int(compared), "similar_pairs": int(len(key)),
                                  "cells": int(cells), "largest_cell": int(sizes.max())}


def _spherical_kmeans(X: np.ndarray, k: int, chunk_rows: int) -> np.ndarray:
    """k unit centroids of the rows of X: seeded k-means by cosine (_KMEANS_ITERATIONS rounds)
    on a seeded sample of at most _KMEANS_SAMPLE rows; a cell left empty keeps its centroid."""
    rng = np.random.default_rng(_SEED)
    sample = X[np.sort(rng.choice(len(X), min(len(X), max(_KMEANS_SAMPLE, 4 * k)), replace=False))]
    centroids = sample[np.sort(rng.choice(len(sample), k, replace=False))].copy()
    for _ in range(_KMEANS_ITERATIONS):
        assign = np.concatenate([np.argmax(sample[start:start + chunk_rows] @ centroids.T, axis=1)
                                 for start in range(0, len(sample), chunk_rows)])
        sums = sp.csr_matrix((np.ones(len(sample), dtype=np.float32), (assign, np.arange(len(sample)))),
                             shape=(k, len(sample))) @ sample
        norms = np.linalg.norm(sums, axis=1)
        filled = norms > 0
        centroids[filled] = sums[filled] / norms[filled, None]
    return centroids


def _cat(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)
