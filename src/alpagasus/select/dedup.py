"""Near-duplicate removal: MinHash + LSH (datasketch) over normalised text, keeping the best-rated copy.

Normalisation removes what makes a copy look different without changing it: case, Unicode forms, punctuation
and spacing. The text is the whole example (instruction, input, response), shingled into word n-grams; two rows
whose estimated Jaccard similarity is at least the threshold are the same example. Exact duplicates never get
here: they share a content id and `rate` merged them. Why MinHash and not embedding cosine: measured on planted
copies (bench/selection.py), it finds them without encoding anything and without taking paraphrases as copies.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Iterable

NUM_PERM = 128
NGRAM = 2  # word bigrams: one dropped word changes ~2 of n shingles
THRESHOLD = 0.7  # estimated Jaccard at or above which two rows are one example
_PUNCT = re.compile(r"[^\w\s]+", re.UNICODE)


def normalise(text: str) -> str:
    """Case-folded NFKC text, punctuation dropped, runs of whitespace made one space."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_PUNCT.sub(" ", text).split())


def shingles(text: str, n: int = NGRAM) -> set[bytes]:
    words = normalise(text).split()
    if len(words) <= n:
        return {" ".join(words).encode()} if words else set()
    return {" ".join(words[i : i + n]).encode() for i in range(len(words) - n + 1)}


@dataclass
class Duplicates:
    """The outcome: `removed[pos] = (twin pos, estimated Jaccard)`; positions are file rows (0-based)."""

    removed: dict[int, tuple[int, float]] = field(default_factory=dict)
    clusters: int = 0


class NearDuplicates:
    """Add rows (position, text, score) one at a time; `resolve` groups them and keeps each group's best."""

    def __init__(self, threshold: float = THRESHOLD, ngram: int = NGRAM, num_perm: int = NUM_PERM) -> None:
        try:
            from datasketch import MinHash, MinHashLSH
        except ImportError as e:  # declared in the [select] extra
            raise ImportError("--dedup needs datasketch: pip install 'alpagasus[select]'") from e
        if not 0 < threshold <= 1:
            raise ValueError(f"dedup threshold must be in (0, 1], not {threshold}")
        self._MinHash, self.threshold, self.ngram, self.num_perm = MinHash, threshold, ngram, num_perm
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self.hashes: dict[int, Any] = {}
        self.scores: dict[int, float] = {}
        self.pairs: list[tuple[int, int, float]] = []

    def add(self, pos: int, text: str, score: float | None) -> None:
        m = self._MinHash(num_perm=self.num_perm, seed=1)
        sh = shingles(text, self.ngram)
        if not sh:
            return
        m.update_batch(list(sh))
        for other in self.lsh.query(m):  # candidates from the bands; kept only if the estimate agrees
            j = self.hashes[other].jaccard(m)
            if j >= self.threshold:
                self.pairs.append((other, pos, j))
        self.lsh.insert(pos, m)
        self.hashes[pos] = m
        self.scores[pos] = score if score is not None and not math.isnan(score) else -math.inf

    def resolve(self) -> Duplicates:
        parent: dict[int, int] = {}

        def root(x: int) -> int:
            while parent.get(x, x) != x:
                parent[x] = parent.get(parent[x], parent[x])
                x = parent[x]
            return x

        for a, b, _ in self.pairs:
            ra, rb = root(a), root(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
        groups: dict[int, list[int]] = {}
        for x in {p for a, b, _ in self.pairs for p in (a, b)}:
            groups.setdefault(root(x), []).append(x)
        best_j = {}
        for a, b, j in self.pairs:
            best_j[(a, b)] = best_j[(b, a)] = j
        out = Duplicates(clusters=len(groups))
        for members in groups.values():
            # the best-rated copy survives; on a tie, the first in the file
            keep = min(members, key=lambda p: (-self.scores[p], p))
            for p in members:
                if p != keep:
                    sim = best_j.get((p, keep)) or self.hashes[p].jaccard(self.hashes[keep])
                    out.removed[p] = (keep, round(float(sim), 3))
        return out


def find_duplicates(
    rows: Iterable[tuple[int, str, float | None]], threshold: float = THRESHOLD, ngram: int = NGRAM
) -> Duplicates:
    """Near-duplicates among (position, text, score) rows; see `NearDuplicates`."""
    nd = NearDuplicates(threshold, ngram)
    for pos, text, score in rows:
        nd.add(pos, text, score)
    return nd.resolve()
