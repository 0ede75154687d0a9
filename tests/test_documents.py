"""llmos_sandbox.documents: the pages a host hands to kernel code, read without a kernel."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
from helpers import need_module
from llmos_sandbox import documents


def test_markdown_tables_are_parsed_and_cleaned() -> None:
    text = """Intro | not a table

| Name | Note | Note |
|:---|---:|---|
| **Ada** | [home](https://a.example) \\| more | ![logo](x.png) |
| Bob |
Table ends here.
| Only | a header |
"""
    [(header, rows)] = documents.markdown_tables(text)
    assert header == ["Name", "Note", "Note"]
    assert rows == [["Ada", "home | more", "logo"], ["Bob", "", ""]]


def test_read_page_finds_by_exact_source_prefix_or_last_web_page(tmp_path: Path) -> None:
    documents.write(tmp_path, {"https://a.example/x?y=1": "A", "https://b.example/": "B", "python": "out"})
    assert documents.read_page(folder=tmp_path) == "B"
    assert documents.read_page("https://a.example/x", folder=tmp_path) == "A"
    assert documents.read_page("python", folder=tmp_path) == "out"
    with pytest.raises(KeyError, match=re.escape("the pages read are: https://a.example/x")):
        documents.read_page("https://c.example/", folder=tmp_path)


def test_no_web_page_read_yet_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="no web page"):
        documents.read_page(folder=tmp_path)
    documents.write(tmp_path, {"search:archive": "results"})
    with pytest.raises(KeyError, match="no web page"):
        documents.page_tables(folder=tmp_path)


def test_the_demo_sites_funding_table_reads_back_as_the_company_rows(tmp_path: Path) -> None:
    """The real browser extraction of a generated funding page, then page_tables."""
    need_module("pandas")
    from llmos_apps.browser.extract import html_to_markdown
    from llmos_tiny import funding

    company = funding.random_company(random.Random(3))
    markup = funding.funding_page(company, [])
    text = html_to_markdown(markup, company.url).text
    documents.write(tmp_path, {company.url: text})
    [table] = documents.page_tables(folder=tmp_path)
    assert list(table.columns[:4]) == ["Date", "Round", "Amount raised", "Post-money valuation"]
    expected = [[date, name, amount, val or "not disclosed"] for date, name, amount, val, _ in company.rows]
    assert table.iloc[:, :4].values.tolist() == expected
