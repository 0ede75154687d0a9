"""Reference for the valuation demo: the expected table, and a validator for run folders.

    python examples/valuation/reference.py scale-ai              # the expected table as CSV
    python examples/valuation/reference.py scale-ai --check RUN  # validate a run folder (exit 1 on problems)

Contract
--------
* :func:`companies` lists the archive's companies (slug -> name) from ``examples/web/index.json``:
  every page ``https://web.llmos.example/companies/<slug>/funding``.
* :func:`page_rounds` reads a company's funding table the way the model sees it: through the
  browser app's extraction (``llmos_apps.browser`` in archive mode), not by parsing the HTML.
* :func:`expected_rows` applies the demo's imputation method, computed exactly with
  ``llmos_apps.calculator.evaluate``: a round without a reported valuation gets
  ``amount × mean(valuation ÷ amount over the rounds where both are reported)``.
* :func:`validate_run` checks a run folder's artifacts (not its prose) and returns a list of
  problems, empty when the run passes:
  ``artifacts/valuations.csv`` has the columns ``date,round,amount_usd,valuation_usd,imputed``
  and one row per round (same order as the page, by date; same year-month, round name and
  amount within 0.5%); reported valuations within 0.5%, imputed ones within 1% of the method,
  and the ``imputed`` flag right; ``artifacts/valuations.png`` decodes and is a real plot
  (size, colours, drawn pixels); ``report.html`` embeds exactly that PNG as a
  ``data:image/png;base64`` image.

Not covered: the plot's content (log axis, trend line) beyond "a real plot", the summary prose.
"""

from __future__ import annotations

import argparse
import base64
import csv
import io
import json
import re
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

ARCHIVE = Path(__file__).resolve().parent.parent / "web"
SITE = "https://web.llmos.example"
COLUMNS = ["date", "round", "amount_usd", "valuation_usd", "imputed"]
MONTHS = {
    m: n for n, m in enumerate(["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1)
}
SCALE = {"k": "1000", "m": "1000000", "b": "1000000000", "t": "1000000000000"}
AMOUNT_TOLERANCE = 0.005  # reported figures: rounding only
IMPUTED_TOLERANCE = 0.01  # imputed figures: within 1% of the ratio method


@dataclass(frozen=True)
class Round:
    date: str  # YYYY-MM
    name: str
    amount_usd: Fraction
    valuation_usd: Fraction | None  # None: not disclosed


@dataclass(frozen=True)
class Expected:
    date: str
    name: str
    amount_usd: Fraction
    valuation_usd: Fraction
    imputed: bool


def companies(archive: Path = ARCHIVE) -> dict[str, str]:
    """slug -> company name, for every funding page in the archive."""
    index = json.loads((archive / "index.json").read_text(encoding="utf-8"))
    found = {}
    for url, entry in index["pages"].items():
        match = re.fullmatch(re.escape(SITE) + r"/companies/([a-z0-9-]+)/funding", url)
        if match:
            found[match.group(1)] = entry["title"].split(" funding rounds")[0]
    return found


def slug_for(company: str, archive: Path = ARCHIVE) -> str:
    """The archive slug for a slug or a company name ("Scale AI" -> "scale-ai")."""
    known = companies(archive)
    for slug, name in known.items():
        if company.strip().lower() in (slug, name.lower()):
            return slug
    raise KeyError(f"{company!r} is not in the archive (known: {', '.join(known.values())})")


def money(text: str) -> Fraction:
    """'$4.5M' -> 4500000, exactly (through the calculator)."""
    from llmos_apps.calculator import evaluate

    match = re.fullmatch(r"\$?\s*([\d.,]+)\s*([kmbt]?)", text.strip().lower())
    if not match:
        raise ValueError(f"not an amount: {text!r}")
    number, unit = match.group(1).replace(",", ""), match.group(2)
    return Fraction(evaluate(f"{number} * {SCALE[unit]}" if unit else number))


def month(text: str) -> str:
    """'Aug 2017', '2017-08' or '2017-08-15' -> '2017-08'."""
    text = text.strip()
    if match := re.fullmatch(r"(\d{4})-(\d{1,2})(?:-\d{1,2})?", text):
        return f"{match.group(1)}-{int(match.group(2)):02d}"
    if match := re.fullmatch(r"([A-Za-z]{3})[a-z]*\.?\s+(\d{4})", text):
        return f"{match.group(2)}-{MONTHS[match.group(1).lower()]:02d}"
    raise ValueError(f"not a date: {text!r}")


def page_rounds(company: str, archive: Path = ARCHIVE) -> list[Round]:
    """The funding table of the company's archive page, as the browser extracts it."""
    from llmos_apps.browser.config import BrowserSettings
    from llmos_apps.browser.web import web_for

    slug = slug_for(company, archive)
    web = web_for(BrowserSettings.from_settings({"web": f"archive:{archive}"}))
    document = web.open(f"{SITE}/companies/{slug}/funding")
    rounds = []
    for line in document.text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 4 or not re.fullmatch(r"[A-Z][a-z]{2} \d{4}", cells[0]):
            continue
        name = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", cells[1])  # [Series A](url) -> Series A
        valuation = None if "not disclosed" in cells[3].lower() else money(cells[3])
        rounds.append(Round(month(cells[0]), name, money(cells[2]), valuation))
    if not rounds:
        raise ValueError(f"no funding table found on {document.final_url}")
    return rounds


def ratio_expression(rounds: list[Round]) -> str:
    """The calculator expression for the mean valuation/amount ratio of the rounds where both are known."""
    known = [r for r in rounds if r.valuation_usd is not None]
    if not known:
        raise ValueError("no round has a reported valuation: nothing to impute from")
    terms = " + ".join(f"{r.valuation_usd}/{r.amount_usd}" for r in known)
    return f"({terms}) / {len(known)}"


def expected_rows(company: str, archive: Path = ARCHIVE) -> list[Expected]:
    """Every round with its valuation, missing ones imputed by the stated method."""
    from llmos_apps.calculator import evaluate

    rounds = page_rounds(company, archive)
    ratio = ratio_expression(rounds)
    rows = []
    for r in rounds:
        if r.valuation_usd is None:
            rows.append(Expected(r.date, r.name, r.amount_usd, Fraction(evaluate(f"{r.amount_usd} * {ratio}")), True))
        else:
            rows.append(Expected(r.date, r.name, r.amount_usd, r.valuation_usd, False))
    return rows


def expected_csv(company: str, archive: Path = ARCHIVE) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in expected_rows(company, archive):
        writer.writerow([row.date, row.name, int(row.amount_usd), round(row.valuation_usd), str(row.imputed).lower()])
    return out.getvalue()


# -- validation -----------------------------------------------------------------------------


def _number(text: str) -> float:
    return float(text.strip().replace(",", "").replace("$", "").replace("_", ""))


def _close(value: float, expected: Fraction, tolerance: float) -> bool:
    return abs(value - float(expected)) <= tolerance * abs(float(expected))


def _same_round(got: str, want: str) -> bool:
    """Names match ignoring case and punctuation; one may abbreviate the other ('Strategic investment')."""
    a, b = (re.sub(r"[^a-z0-9]+", " ", s.lower()).strip() for s in (got, want))
    return bool(a) and (a == b or a in b or b in a)


def _truthy(text: str) -> bool | None:
    value = text.strip().lower()
    return True if value in ("true", "yes", "1", "y") else False if value in ("false", "no", "0", "n", "") else None


def check_csv(path: Path, expected: list[Expected]) -> list[str]:
    if not path.is_file():
        return [f"{path.name} is missing"]
    try:
        reader = csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig")))
        rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        return [f"{path.name} is not readable CSV: {exc}"]
    header = [name.strip().lower() for name in (reader.fieldnames or [])]
    if header[: len(COLUMNS)] != COLUMNS:
        return [f"{path.name} columns are {header}, expected {COLUMNS}"]
    ragged = [number for number, row in enumerate(rows, 1) if None in row]  # DictReader's key for extra fields
    if ragged:
        return [f"{path.name} rows {ragged} have more fields than the header"]
    rows = [{k.strip().lower(): (v or "") for k, v in row.items() if k} for row in rows]
    if len(rows) != len(expected):
        return [f"{path.name} has {len(rows)} rows, expected {len(expected)} ({', '.join(e.name for e in expected)})"]
    problems = []
    for number, (row, want) in enumerate(zip(rows, expected, strict=True), 1):
        where = f"{path.name} row {number} ({want.name})"
        try:
            date, amount, valuation = month(row["date"]), _number(row["amount_usd"]), _number(row["valuation_usd"])
        except (ValueError, KeyError) as exc:
            problems.append(f"{where}: {exc}")
            continue
        if date != want.date:
            problems.append(f"{where}: date {row['date']!r}, expected {want.date}")
        if not _same_round(row["round"], want.name):
            problems.append(f"{where}: round {row['round']!r}, expected {want.name!r}")
        if not _close(amount, want.amount_usd, AMOUNT_TOLERANCE):
            problems.append(f"{where}: amount_usd {row['amount_usd']}, expected {int(want.amount_usd)}")
        tolerance = IMPUTED_TOLERANCE if want.imputed else AMOUNT_TOLERANCE
        if not _close(valuation, want.valuation_usd, tolerance):
            problems.append(
                f"{where}: valuation_usd {row['valuation_usd']}, expected {float(want.valuation_usd):.0f} "
                f"(within {tolerance:.1%}{', imputed' if want.imputed else ''})"
            )
        if _truthy(row["imputed"]) is not want.imputed:
            problems.append(f"{where}: imputed {row['imputed']!r}, expected {str(want.imputed).lower()}")
    return problems


def check_plot(path: Path) -> list[str]:
    """A real plot: decodes, at least 200×150, many colours, and a fair share of drawn (non-white) pixels."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        return [f"{path.name} is missing"]
    try:
        with Image.open(path) as image:
            if image.format != "PNG":
                return [f"{path.name} is a {image.format}, not a PNG"]
            rgb = image.convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        return [f"{path.name} does not decode: {exc}"]
    width, height = rgb.size
    if width < 200 or height < 150:
        return [f"{path.name} is {width}×{height}: too small for a plot"]
    pixels = np.asarray(rgb).reshape(-1, 3)
    colours = len(np.unique(pixels, axis=0))
    drawn = float((pixels.min(axis=1) < 235).mean())
    problems = []
    if colours < 8:
        problems.append(f"{path.name} has {colours} distinct colours: not a plot")
    if not 0.005 <= drawn <= 0.9:
        problems.append(f"{path.name} has {drawn:.1%} drawn pixels: blank or a filled image, not a plot")
    return problems


def check_report(report: Path, plot: Path) -> list[str]:
    if not report.is_file():
        return [f"{report.name} is missing"]
    if not plot.is_file():
        return []  # already reported
    data = base64.b64encode(plot.read_bytes()).decode()
    if f"data:image/png;base64,{data}" not in report.read_text(encoding="utf-8"):
        return [f"{report.name} does not embed {plot.name} as a data:image/png;base64 image"]
    return []


def validate_run(run_folder: str | Path, company: str, archive: Path = ARCHIVE) -> list[str]:
    """Problems with a valuation run's artifacts; an empty list means the run passes."""
    folder = Path(run_folder)
    artifacts = folder / "artifacts"
    problems = check_csv(artifacts / "valuations.csv", expected_rows(company, archive))
    problems += check_plot(artifacts / "valuations.png")
    problems += check_report(folder / "report.html", artifacts / "valuations.png")
    if not (folder / "transcript.json").is_file():
        problems.append("transcript.json is missing")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("company", help="a slug or a name: " + ", ".join(companies()))
    parser.add_argument("--check", metavar="RUN_FOLDER", help="validate a run folder instead")
    args = parser.parse_args(argv)
    if args.check is None:
        print(expected_csv(args.company), end="")
        return 0
    problems = validate_run(args.check, args.company)
    for problem in problems:
        print(problem)
    print("pass" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
