"""Embeddings for diversity: the shipped MiniLM encoder over the whole example, computed once per content id
and kept in the store's `embeddings` table (item_id, encoder, dim, vector).

What is embedded: the whole conversation, as DEITA does (it embeds the full dialogue, not the instruction):
the sample's prompt and response joined by a blank line (Alpaca: instruction, input when there is one, output;
a chat row: its rendered context, docs/formats.md, then the last assistant turn), truncated by the encoder at 256
tokens (all-MiniLM-L6-v2's own limit; longer responses are represented by their beginning). The encoder key
names the model, the text and the truncation, so a change to any of them is a new key, never a stale vector.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

from alpagasus.records import Example

ENCODER_KEY = "all-MiniLM-L6-v2:conversation:256"
DIM = 384
CHUNK = 500  # ids per IN (...) query: SQLite's parameter limit is 999 on old builds
BATCH = 256  # texts per encoder call between store commits: a killed run loses at most one batch


def embedding_text(row: dict[str, Any], format: str | None = None) -> str:
    """The text DEITA-style selection embeds: the whole example, prompt then response (a ratings row's sample,
    read in `format` or the one its keys show; "" when it holds none)."""
    from alpagasus.formats import example_of

    ex = example_of(row, format)
    return sample_text(ex) if isinstance(ex, Example) else ""


def sample_text(example: Example) -> str:
    """A sample's prompt and response, joined by a blank line (either left out when blank)."""
    return "\n\n".join(p for p in (example.prompt, example.response) if p.strip())


def load_vectors(store: Any, ids: Sequence[str], encoder: str = ENCODER_KEY) -> dict[str, Any]:
    """The stored vectors of these ids (those that have one), as float32 arrays."""
    import numpy as np

    out: dict[str, Any] = {}
    unique = list(dict.fromkeys(ids))
    for k in range(0, len(unique), CHUNK):
        chunk = unique[k : k + CHUNK]
        rows = store.db.execute(
            f"SELECT item_id, dim, vector FROM embeddings WHERE encoder=? AND item_id IN "
            f"({','.join('?' * len(chunk))})",
            [encoder, *chunk],
        )
        for item_id, dim, blob in rows:
            vec = np.frombuffer(blob, dtype=np.float32)
            if vec.shape[0] == dim:  # a truncated blob (never written by us) is recomputed, not trusted
                out[item_id] = vec
    return out


def save_vectors(store: Any, ids: Sequence[str], vectors: Any, encoder: str = ENCODER_KEY) -> None:
    import numpy as np

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    data = [(i, encoder, int(v.shape[0]), v.tobytes()) for i, v in zip(ids, vectors)]
    with store.transaction():
        store.db.executemany("INSERT OR REPLACE INTO embeddings (item_id, encoder, dim, vector) VALUES (?,?,?,?)", data)


def stored_count(store: Any, encoder: str = ENCODER_KEY) -> int:
    return store.db.execute("SELECT COUNT(*) FROM embeddings WHERE encoder=?", (encoder,)).fetchone()[0]


class Embedder:
    """Vectors by content id: from the store when there, else encoded (in batches) and stored at once.
    `encode` is injectable so the same code path runs with the shipped encoder or another function."""

    def __init__(
        self, store: Any, encode: Callable[[list[str]], Any] | None = None, encoder: str = ENCODER_KEY
    ) -> None:
        self.store, self.encoder, self._encode = store, encoder, encode
        self.computed = 0  # vectors this run encoded (the rest came from the store)

    def encode(self, texts: list[str]) -> Any:
        if self._encode is None:
            from alpagasus.predictors import shared_encoder

            self._encode = shared_encoder().encode
        return self._encode(texts)

    def ensure(self, items: Iterable[tuple[str, str]]) -> None:
        """Store a vector for every (id, text) that has none yet; items are streamed, BATCH at a time."""
        batch: dict[str, str] = {}
        for item_id, text in items:
            batch[item_id] = text
            if len(batch) >= BATCH:
                self._fill(batch)
                batch = {}
        if batch:
            self._fill(batch)

    def _fill(self, batch: dict[str, str]) -> None:
        have = load_vectors(self.store, list(batch), self.encoder)
        todo = [i for i in batch if i not in have]
        if todo:
            vecs = self.encode([batch[i] for i in todo])
            save_vectors(self.store, todo, vecs, self.encoder)
            self.computed += len(todo)

    def matrix(self, ids: Sequence[str]) -> Any:
        """(len(ids), dim) float32 of stored vectors, in the order of `ids` (all must be stored)."""
        import numpy as np

        got = load_vectors(self.store, ids, self.encoder)
        missing = [i for i in ids if i not in got]
        if missing:
            raise KeyError(f"no stored embedding for {len(missing)} ids (first: {missing[0]})")
        return np.stack([got[i] for i in ids]) if ids else np.zeros((0, DIM), dtype=np.float32)
