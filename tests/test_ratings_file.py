"""The ratings file's row has one writer and one reader (ratings_file.py): what the view and the cascade write
reads back as the same typed rating and the same user fields, with or without the user's own `score` column."""

from __future__ import annotations

import json

from alpagasus.data import write_jsonl
from alpagasus.ratings_file import (
    RATING_PREFIX,
    RowRating,
    invalid_row,
    rating_field,
    rating_of,
    rating_view,
    row_of,
    stored_rating,
    user_fields,
)
from alpagasus.records import Example, InvalidRow, Rating


def test_a_row_round_trips_through_a_file(tmp_path):
    plain = Example.alpaca("Add 2 and 2.", "", "4", row=1)
    theirs = Example.alpaca("Add 3 and 3.", "", "6", extra={"score": "user's own", "model": "gpt-x"}, row=2)
    r = Rating(plain.id, "j#lp", "v1", 4.5, "ok", probs={"4": 0.5, "5": 0.5}, model="m", extra={"label_mass": 0.9})
    ratings = [stored_rating(plain, r, "j#lp", "v1"), stored_rating(theirs, None, "j#lp", "v1")]
    ratings[0].flags = ["injection"]
    rows = [row_of(e.fields(), x) for e, x in zip((plain, theirs), ratings)]
    rows.append(invalid_row(InvalidRow("in.jsonl", 3, "output", "not a string"), "j#lp", "v1"))
    path = tmp_path / "ratings.jsonl"
    write_jsonl(path, rows)
    back = [json.loads(line) for line in path.read_text().splitlines()]

    assert [rating_of(b) for b in back[:2]] == ratings  # the typed rating, wherever the writer put it
    assert list(back[0])[:3] == ["instruction", "input", "output"] and back[0]["score"] == 4.5
    assert back[0]["label_mass"] == 0.9 and rating_field(back[0], "flags") == ["injection"]
    # the user's `score` column is kept; the rating's fields all go under the prefix
    assert back[1]["score"] == "user's own" and back[1][RATING_PREFIX + "status"] == "error"
    assert rating_field(back[1], "score") is None and rating_view(back[1])["status"] == "error"
    assert user_fields(back[1]) == theirs.fields() and user_fields(back[0]) == plain.fields()
    bad = rating_of(back[2])
    assert (bad.id, bad.row, bad.status, bad.explanation) == (None, 3, "invalid_input", "not a string")


def test_empty_and_ifd_rows():
    empty = Example.alpaca("Say nothing.", "", "  ", row=1)
    e = stored_rating(empty, None, "j", "v1")
    assert e.status == "empty" and "--rate-empty" in (e.explanation or "") and e.score is None
    x = Example.alpaca("Define IFD.", "", "A ratio of losses.", extra={"ifd": "user's column"}, row=2)
    r = Rating(x.id, "ifd:hf:m#loss", "v1", 0.8, "ok", extra={"ifd": {"ifd": 0.8, "ge_1": False}})
    row = row_of(x.fields(), stored_rating(x, r, "ifd:hf:m#loss", "v1"))
    assert row["ifd"] == "user's column" and row[RATING_PREFIX + "ifd"] == {"ifd": 0.8, "ge_1": False}
    assert rating_of(row).ifd == {"ifd": 0.8, "ge_1": False} and user_fields(row)["ifd"] == "user's column"
    other = row_of(x.fields(), RowRating(x.id, 2, 4.0, "ok", "j", "v1"))
    assert "alpagasus_ifd" not in other and user_fields(other)["ifd"] == "user's column"
