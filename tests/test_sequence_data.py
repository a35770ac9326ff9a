"""Sequence datasets: next-character windows of real text and the generated date translations."""

from __future__ import annotations

import datetime

import pytest

from kerasops.data import DataError, load_prepared, prepare_dataset, resolve_dataset_config
from kerasops.data.dates import FORMATS, generate_date_pairs, ordinal, render_date
from kerasops.errors import ConfigError

PARSERS = {  # format name -> strptime pattern that reads the rendered date back
    "day_month_year": "%d %B %Y",
    "month_day_year": "%B %d, %Y",
    "us_slashes": "%m/%d/%y",
    "european_dots": "%d.%m.%Y",
    "weekday_long": "%A, %d %B %Y",
    "weekday_short": "%a, %b %d, %Y",
    "military": "%d %b %Y",
    "compact": "%Y%m%d",
    "iso": "%Y-%m-%d",
}


def test_every_date_format_renders_the_same_date():
    date = datetime.date(1987, 11, 22)
    assert render_date(date, "ordinal_lower") == "november 22nd, 1987"
    assert render_date(date, "ordinal_of") == "22nd of November 1987"
    for name, pattern in PARSERS.items():
        assert datetime.datetime.strptime(render_date(date, name), pattern).date() == date
    assert [ordinal(d) for d in (1, 2, 3, 4, 11, 12, 13, 21, 22, 31)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "31st"
    ]  # fmt: skip


def test_generated_pairs_are_deterministic_distinct_and_correct():
    pairs = generate_date_pairs(500, 1950, 2049, seed=3)
    assert pairs == generate_date_pairs(500, 1950, 2049, seed=3)
    assert pairs != generate_date_pairs(500, 1950, 2049, seed=4)
    assert len({(source, name) for source, _, name in pairs}) == 500
    assert {name for _, _, name in pairs} == set(FORMATS)
    for source, target, name in pairs:
        if name in PARSERS:
            parsed = datetime.datetime.strptime(source, PARSERS[name]).date()
            if name == "us_slashes":  # strptime pivots two-digit years at 69; the corpus
                parsed = parsed.replace(year=int(target[:4]))  # at its years' century
                assert source.endswith(target[2:4])
            assert parsed.isoformat() == target, (source, name)


def test_generated_dates_refuse_ambiguous_or_impossible_requests():
    with pytest.raises(DataError, match="more than 100 years"):
        generate_date_pairs(10, 1900, 2049, seed=0)
    with pytest.raises(DataError, match="examples must be in 1..4026"):
        generate_date_pairs(5000, 2000, 2000, seed=0)  # 366 days x 11 formats


def test_dates_prepare_as_translation_pairs_byte_stably(tmp_path):
    config = resolve_dataset_config("dates", {"dates": {"examples": 400}})
    first = prepare_dataset("dates", config, tmp_path / "raw", tmp_path / "prepared")
    train_bytes = (tmp_path / "prepared" / "dates" / "train-00000.tfrecord").read_bytes()
    again = prepare_dataset("dates", config, tmp_path / "raw", tmp_path / "prepared")
    assert again.content_hash == first.content_hash
    assert (tmp_path / "prepared" / "dates" / "train-00000.tfrecord").read_bytes() == train_bytes
    assert (first.kind, first.task, first.input_dtype) == ("text", "translation", "string")
    assert sum(first.splits.values()) == 400 and first.stats["target_characters_max"] == 10
    test = load_prepared("dates", tmp_path / "prepared").splits["test"]
    assert all(len(t) == 10 and t[4] == "-" for t in test.y)
    assert (tmp_path / "raw" / "dates" / "dates.csv").read_text().startswith("source,target")


def test_bbc_news_lm_windows_shift_by_one_character(tmp_path):
    values = {"bbc_news_lm": {"max_documents": 30, "window": 40, "stride": 20}}
    config = resolve_dataset_config("bbc_news_lm", values)
    manifest = prepare_dataset("bbc_news_lm", config, tmp_path / "raw", tmp_path / "prepared")
    assert (manifest.task, manifest.stats["window"], manifest.stats["documents"]) == (
        "language_modeling",
        40.0,
        30.0,
    )
    train = load_prepared("bbc_news_lm", tmp_path / "prepared").splits["train"]
    assert all(len(x) == len(y) == 40 for x, y in zip(train.x, train.y, strict=True))
    assert all(x[1:] == y[:-1] for x, y in zip(train.x, train.y, strict=True))
    assert train.x[0][20:] == train.x[1][:20]  # stride 20: windows overlap by half
    assert all("  " not in x and "\n" not in x for x in train.x)


def test_text_corpus_reads_a_folder_of_documents_split_by_document(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(10):
        (corpus / f"doc{i}.txt").write_text(f"Document {i} says: " + "words and more " * 20)
    values = {"mine": {"source": "text_corpus", "path": str(corpus), "window": 16}}
    manifest = prepare_dataset(
        "mine", resolve_dataset_config("mine", values), tmp_path / "raw", tmp_path / "prepared"
    )
    assert manifest.stats["documents"] == 10 and manifest.splits["test"] > 0
    prepared = load_prepared("mine", tmp_path / "prepared")
    train_docs = {x[9] for x in prepared.splits["train"].x if x.startswith("Document ")}
    test_docs = {x[9] for x in prepared.splits["test"].x if x.startswith("Document ")}
    assert not train_docs & test_docs


def test_sequence_sources_report_bad_inputs_in_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="holds no .txt files"):
        prepare_dataset(
            "x", {"source": "text_corpus", "path": str(empty)}, tmp_path, tmp_path / "out"
        )
    (tmp_path / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        prepare_dataset(
            "x", {"source": "text_corpus", "path": "latin.txt"}, tmp_path, tmp_path / "out"
        )
    (tmp_path / "pairs.csv").write_text("source,target\nhello,bonjour\nworld,\n")
    with pytest.raises(DataError, match="row 3 has an empty source or target"):
        prepare_dataset(
            "x", {"source": "translation_csv", "path": "pairs.csv"}, tmp_path, tmp_path / "out"
        )
    with pytest.raises(ConfigError, match="window must be at least 2"):
        resolve_dataset_config("bbc_news_lm", {"bbc_news_lm": {"window": 1}})
    with pytest.raises(ConfigError, match="unknown key datasets.dates.exampels"):
        resolve_dataset_config("dates", {"dates": {"exampels": 10}})
