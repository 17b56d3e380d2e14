import math

from bench.charts import numeric_columns, slug, table_chart, tables, write_charts

REPORT = """# facelive benchmarks

## Pipeline: 2.4x the baseline (same run)

| run | frames | frames/s | ÷ baseline | p50 / p95 ms | note |
|---|---|---|---|---|---|
| lossless | 300 | 6.51 | 2.42× | 2403 / 2649 | budget |
| live | 56 | 3.89 | - | 291 / 621 | 25 fps |

## Gallery

| gallery | |
| --- | --- |
| index | HNSW M=16 |
"""


def test_tables_are_found_under_their_headings():
    found = tables(REPORT)
    assert [t.title for t in found] == ["Pipeline: 2.4x the baseline (same run)", "Gallery"]
    assert found[0].header[:2] == ["run", "frames"] and found[0].rows[1][0] == "live"


def test_numeric_columns_parse_units_missing_cells_and_pairs():
    table = tables(REPORT)[0]
    columns = dict(numeric_columns(table.header, table.rows))
    assert list(columns) == ["frames", "frames/s", "÷ baseline", "p50 ms", "p95 ms"]  # "note" is text
    assert columns["÷ baseline"][0] == 2.42 and math.isnan(columns["÷ baseline"][1])
    assert columns["p95 ms"] == [2649.0, 621.0]


def test_charts_are_pngs_named_after_what_they_measure(tmp_path):
    written = write_charts(REPORT, tmp_path)
    # the gallery's key-value table has no numeric column: no chart
    assert written == [tmp_path / "bench-pipeline.png"]
    assert written[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert slug("Overload: live input 4.2× what is processed, 300 s") == "overload"
    assert table_chart(["a", "b"], [["x", "text"]], tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
