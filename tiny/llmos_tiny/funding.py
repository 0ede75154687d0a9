# ruff: noqa: E501  (page prose and HTML templates read better unwrapped)
"""Funding-history pages and the valuation method: shared by the demo archive and llmos-tiny.

Contract
--------
* :class:`Company` holds a company's funding facts as a funding page states them
  (``("Aug 2017", "Series A", "$4.5M", None, "Accel")``: date, round, amount, valuation
  or ``None`` when not disclosed, lead investors).
* :func:`funding_page` renders the demo site's HTML page for a company. The shipped
  archive (``examples/web/build_pages.py``) and llmos-tiny's curriculum both use it, so
  the model trains on the same page the demo opens (through the real browser extraction).
* :func:`home_page` renders the site's company index, which a search for funding rounds
  also finds (the demo archive has it, so the curriculum's invented sites have it too).
* :func:`random_company` invents a company (names from syllables or free letters, so none is real).
* The method the model is taught: :func:`ratio_expression` is the calculator call for the
  mean valuation/amount ratio of the rounds where both are known, :func:`python_cell`
  writes ``valuations.csv`` and ``valuations.png`` from that ratio and the page's table,
  which the code reads itself (``page_tables()``, :mod:`llmos_sandbox.documents`), and :func:`cell_output` is what that cell prints (computed here with numpy;
  a test runs the real cell in the sandbox and compares).

Not covered: pages in other layouts, currencies other than US dollars.
"""

from __future__ import annotations

import html
import random
import re
from dataclasses import dataclass

SITE = "https://web.llmos.example"
SNAP = "2025-06-30"
NOTE = (
    "Snapshot of 30 June 2025. Figures are as reported in the press at the time of each round, in US dollars, "
    "rounded; &ldquo;not disclosed&rdquo; means no post-money valuation was reported. Compiled by the llmos project "
    "for its offline demo from public reporting; check primary sources before relying on them."
)
SCALE = {"K": "e3", "M": "e6", "B": "e9", "T": "e12"}
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

# The demo's task, as examples/valuation*.yaml state it (a test keeps them equal).
TASK_PROMPT = (
    "Research the funding history of {name}. Search the web for {name} funding rounds and open the page "
    "that lists them. For each round, note the date, the round name, the amount raised and the post-money "
    "valuation. Where a valuation is not disclosed, impute it: compute with the calculator the average of "
    "valuation divided by amount over all rounds where both are reported, and multiply the round's amount "
    "raised by it. Then, in one python call, write valuations.csv with the columns "
    "date,round,amount_usd,valuation_usd,imputed (one row per round in date order; date as YYYY-MM; amounts "
    "in whole US dollars; imputed true or false), and plot the valuations over time as valuations.png: a "
    "log-scale y axis, imputed points marked differently, and an exponential trend (a straight line fitted "
    "to the log of valuation against time) extrapolated 3 years past the last round. Finally, summarize in a "
    "few sentences: how fast the valuation grew per year on the trend, which valuations are imputed, and "
    "what the trend extrapolates to."
)


@dataclass
class Company:
    key: str  # the URL slug
    name: str
    founded: str
    hq: str
    intro: str
    rows: list[tuple[str, str, str, str | None, str]]
    after: str
    keywords: str

    @property
    def url(self) -> str:
        return f"{SITE}/companies/{self.key}/funding"

    @property
    def title(self) -> str:
        return f"{self.name} funding rounds and valuation history"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


# ---------------------------------------------------------------- the page

HEAD = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<meta name="description" content="{desc}">
<link rel="stylesheet" href="/static/site.css">
<script>window.dataLayer = window.dataLayer || []; function track(e) {{ dataLayer.push(e); }}</script>
</head>
<body>
<div class="cookie-banner" id="cookie-consent">
  <p>We use cookies to improve your experience. <a href="/privacy">Privacy policy</a></p>
  <button>Accept all</button> <button>Reject</button>
</div>
<header class="site-header">
  <a class="logo" href="/">Private Markets Review</a>
  <nav class="main-nav">
    <ul>
      <li><a href="/">Home</a></li>
      <li><a href="/companies/">Companies</a></li>
      <li><a href="/investors/">Investors</a></li>
      <li><a href="/newsletter">Newsletter</a></li>
      <li><a href="/login">Sign in</a></li>
    </ul>
  </nav>
</header>
<nav class="breadcrumbs"><a href="/">Home</a> &rsaquo; <a href="/companies/">Companies</a> &rsaquo; {name}</nav>
"""
FOOT = """<aside class="sidebar related">
  <h3>Related companies</h3>
  <ul>{related}</ul>
  <div class="newsletter">Get the weekly funding digest. <a href="/newsletter">Subscribe</a></div>
</aside>
<footer class="site-footer">
  <p>&copy; 2025 Private Markets Review (a demo site written by the llmos project). <a href="/terms">Terms</a> &middot; <a href="/privacy">Privacy</a> &middot; <a href="/contact">Contact</a></p>
  <p>Follow us: <a href="/social/x">X</a> <a href="/social/linkedin">LinkedIn</a></p>
</footer>
<script src="/static/analytics.js"></script>
</body>
</html>
"""


def funding_page(c: Company, related: list[Company]) -> str:
    """The demo site's funding page for ``c``, linking to the ``related`` companies."""
    rows = []
    for date, rnd, amount, val, lead in c.rows:
        leads = ", ".join(f'<a href="/investors/{slug(who)}">{html.escape(who)}</a>' for who in lead.split(", "))
        rows.append(
            f'      <tr><td>{date}</td><td><a href="/companies/{c.key}/rounds/{slug(rnd)}">{html.escape(rnd)}</a></td>'
            f"<td>{amount}</td><td>{val or 'not disclosed'}</td><td>{leads}</td></tr>"
        )
    known = [r for r in c.rows if r[3]]
    links = "".join(f'<li><a href="/companies/{o.key}/funding">{o.name}</a></li>' for o in related)
    body = f"""<main id="content">
<article class="company-profile">
  <header class="article-header">
    <h1>{c.name} funding rounds and valuation history</h1>
    <p class="byline">By the Private Markets Review data desk &middot; <time datetime="{SNAP}">snapshot of 30 June 2025</time></p>
  </header>
  <p>{c.intro} Founded: {c.founded}. Headquarters: {c.hq}.</p>
  <p class="snapshot-note"><strong>About these figures.</strong> {NOTE}</p>
  <h2>Funding rounds</h2>
  <p>The table lists each priced round {c.name} has announced, with the amount raised, the post-money valuation where one was reported, and the lead investors. {len(known)} of {len(c.rows)} rounds have a reported valuation.</p>
  <table class="funding-rounds">
    <caption>{c.name} funding rounds (as reported; snapshot {SNAP})</caption>
    <thead>
      <tr><th>Date</th><th>Round</th><th>Amount raised</th><th>Post-money valuation</th><th>Lead investors</th></tr>
    </thead>
    <tbody>
{chr(10).join(rows)}
    </tbody>
  </table>
  <h2>Notes</h2>
  <p>{c.after}</p>
  <p>Earlier rounds were often announced without a valuation. A common way to estimate the missing ones is to assume the share of the company sold in a round, amount raised divided by post-money valuation, was similar to that of rounds where both are known; such estimates are rough.</p>
  <div class="share-buttons"><a href="/share?x">Share on X</a> <a href="/share?li">Share on LinkedIn</a></div>
</article>
</main>
"""
    title = f"{c.name} funding rounds and valuation history | Private Markets Review"
    desc = f"Every reported {c.name} funding round: date, amount raised, post-money valuation, lead investors. Snapshot {SNAP}."
    return HEAD.format(title=title, desc=desc, name=c.name) + body + FOOT.format(related=links)


def home_page(companies: list[Company]) -> str:
    """The site's company index (``/companies/``), linking to each company's funding page."""
    links = "".join(
        f'<li><a href="/companies/{c.key}/funding">{c.name}</a>: funding rounds and valuations</li>' for c in companies
    )
    return (
        HEAD.format(
            title="Private Markets Review: companies",
            desc="Funding histories of private technology companies.",
            name="Companies",
        )
        + f"""<main>
<h1>Companies</h1>
<p>Funding histories of private technology companies, as reported. Snapshot of {SNAP}.</p>
<ul>{links}</ul>
</main>
"""
        + FOOT.format(related="")
    )


# ---------------------------------------------------------------- invented companies

SYLLABLES = ("ka", "lo", "mi", "ra", "ven", "tor", "sel", "da", "nu", "bri", "osk", "fal", "ther", "quin", "zan", "mor",
             "ely", "pet", "gar", "hol", "wen", "ast", "iri", "lum", "cor", "vex", "tal", "sy", "on", "rix")  # fmt: skip
SUFFIXES = (
    "",
    "",
    " AI",
    " Labs",
    " Systems",
    " Robotics",
    " Bio",
    " Cloud",
    " Data",
    " Health",
    " Energy",
    " Networks",
)
CITIES = ("San Francisco, California", "New York, New York", "London, United Kingdom", "Paris, France",
          "Berlin, Germany", "Austin, Texas", "Boston, Massachusetts", "Toronto, Canada", "Seattle, Washington",
          "Tel Aviv, Israel", "Singapore", "Stockholm, Sweden")  # fmt: skip
PRODUCTS = ("sells software for {x}", "builds tools for {x}", "runs a platform for {x}", "makes hardware for {x}",
            "offers an API for {x}")  # fmt: skip
FIELDS = ("data labelling", "drug discovery", "battery storage", "payments", "logistics", "cybersecurity",
          "speech recognition", "chip design", "weather forecasting", "robot arms", "legal research", "code review",
          "satellite imaging", "customer support", "crop monitoring")  # fmt: skip
INVESTOR_KINDS = (" Ventures", " Capital", " Partners", " Growth", " Fund", " Investments")
SPECIAL_ROUNDS = ("Strategic investment ({p}% stake)", "Growth round", "Secondary sale", "Series {l} extension")


# Real pages say more than one line about a company, and the demo writes its python cell after the
# page: invented pages as long as real ones put that cell where it lands on the demo (a build on
# one-line intros wrote it past the positions it had learned and broke there).
MORE = ("Its customers include {a}, {b} and {c}.", "The company started as a {x} project at a university lab.",
        "It employs about {n} people across offices in {city} and {city2}.", "Its {w} platform is used by {a} and {b}.",
        "In {year} it acquired {w} to expand into {x}.", "It says its revenue more than doubled in {year}.",
        "{w}, its first product, was released in {year} and is still its largest line.",
        "It also runs {w}, an open-source library for {x}.",
        "Its founders previously worked on {x} at a large technology company in {city}.",
        "Analysts count it among the fastest-growing companies in {x}, though it does not publish its revenue.",
        "It opened a research office in {city2} in {year} and says a third of its staff work on {x}.")  # fmt: skip
CUSTOMERS = ("hospitals", "banks", "carmakers", "AI labs", "retailers", "airlines", "utilities", "insurers",
             "the US government", "universities", "telecom operators", "freight companies", "game studios")  # fmt: skip


def about(rng: random.Random, name: str, founded: int) -> str:
    """Zero to six more sentences about a company (pages and search snippets vary in length)."""
    fill = {"a": "", "b": "", "c": "", "x": rng.choice(FIELDS), "n": rng.choice([40, 120, 300, 800, 2500]),
            "city": rng.choice(CITIES), "city2": rng.choice(CITIES), "w": free_word(rng).capitalize(),
            "year": rng.randint(founded + 1, 2025)}  # fmt: skip
    fill["a"], fill["b"], fill["c"] = rng.sample(CUSTOMERS, 3)
    return " ".join(line.format(**fill) for line in rng.sample(MORE, rng.choice([0, 1, 2, 3, 4, 5, 6])))


def investor_name(rng: random.Random) -> str:
    """A lead investor's name in the styles real tables have: "Accel", "Andreessen Horowitz", "NEA",
    "T. Rowe Price", "Counterpoint Global (Morgan Stanley)"."""
    style = rng.random()
    if style < 0.45:
        return invented_name(rng) + rng.choice(INVESTOR_KINDS)
    if style < 0.65:
        return " ".join(free_word(rng).capitalize() for _ in range(rng.choice([1, 2])))
    if style < 0.75:
        return "".join(rng.choice("ABCDEFGHIKLMNPRSTVW") for _ in range(rng.choice([2, 3, 4])))
    if style < 0.85:
        return f"{rng.choice('ABCDEFGHJKLMNPRST')}. {free_word(rng).capitalize()} {invented_name(rng)}"
    return f"{invented_name(rng)}{rng.choice(INVESTOR_KINDS)} ({free_word(rng).capitalize()} {invented_name(rng)})"


def invented_name(rng: random.Random, parts: int = 2) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(parts)).capitalize()


# Free-form names ("Hugging Face", "Databricks"): the tokenizer has few merges for them, so the
# model must copy a name of many small pieces, as it must for real companies.
ONSETS = ("b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "y", "z",
          "br", "ch", "cl", "dr", "fl", "gr", "kr", "pl", "sh", "sc", "sp", "st", "th", "tr", "qu")  # fmt: skip
VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o", "ai", "ea", "ou", "y")
CODAS = ("", "", "", "n", "r", "s", "t", "l", "ck", "ng", "x", "m", "gg", "ld", "nd", "ft")


def free_word(rng: random.Random) -> str:
    return "".join(
        rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS) for _ in range(rng.choice([1, 2, 2, 2, 3]))
    )


def company_name(rng: random.Random) -> str:
    if rng.random() < 0.6:
        return invented_name(rng, rng.choice([2, 2, 3])) + rng.choice(SUFFIXES)
    words = [free_word(rng).capitalize() for _ in range(rng.choice([1, 1, 2]))]
    return " ".join(words) + rng.choice(SUFFIXES)


def money(value: float) -> str:
    """``$4.5M``, ``$18M``, ``$1B``, ``$2.75B``: the page's style (3 significant digits at most)."""
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= size:
            shown = f"{value / size:.3g}"
            return f"${shown}{unit}" if "e" not in shown else f"${value / size:.0f}{unit}"
    return f"${value:.0f}"


def reported(value: float, rng: random.Random) -> str:
    """A figure as the press reports it: often a round number (``$1B``, ``$100M``), so the same
    figure can stand in two cells of a table (an amount here, a valuation there), as on real pages."""
    digits = rng.choices([1, 2, 3], weights=[1, 2, 2])[0]
    return money(float(f"{value:.{digits}g}"))


def _growth(rng: random.Random, amount: float) -> float:
    """The next round's size over this one's: mostly larger, sometimes smaller, sometimes a leap."""
    if amount >= 2e9:
        return rng.uniform(0.5, 1.5)
    draw = rng.random()
    return rng.uniform(0.2, 0.9) if draw < 0.1 else rng.uniform(4, 20) if draw < 0.2 else rng.uniform(1.3, 3.5)


def random_company(rng: random.Random, min_rounds: int = 3) -> Company:
    """An invented company whose table varies the way real ones do: valuation/amount ratios from 3 to
    30 and drifting, rounds that shrink or leap, a last strategic stake bigger than most rounds, round
    figures repeated across cells, and lead investors who lead again (the real pages have each)."""
    name = company_name(rng)
    founded = rng.randint(2004, 2019)
    founders = [f"{invented_name(rng)} {invented_name(rng, 3)}" for _ in range(rng.choice([1, 2]))]
    what = rng.choice(PRODUCTS).format(x=rng.choice(FIELDS))
    intro = f"{name}, founded in {founded} by {' and '.join(founders)}, {what}. {about(rng, name, founded)}".strip()
    n_rounds = rng.randint(min_rounds, 10)
    n_missing = rng.randint(1, min(4, n_rounds - 2))
    year, month = founded + rng.randint(0, 2), rng.randint(1, 12)
    amount, ratio = rng.choice([0.5, 1, 2, 3, 4, 5, 8, 10, 12, 15, 20]) * 1e6, 3 * 10 ** rng.uniform(0, 1)
    investors = [investor_name(rng) for _ in range(rng.randint(2, 8))]
    rows: list[tuple[str, str, str, str | None, str]] = []
    seed_first = rng.random() < 0.4
    for i in range(n_rounds):
        series = sum(1 for r in rows if r[1].startswith("Series"))
        label = "Seed" if i == 0 and seed_first else f"Series {'ABCDEFGHIJKL'[series]}"
        if i == n_rounds - 1 and i > 1 and rng.random() < 0.15:
            label = rng.choice(SPECIAL_ROUNDS).format(p=rng.randint(5, 49), l="ABCDEFGHIJKL"[max(0, series - 1)])
            if rng.random() < 0.5:  # a large stake: the amount nears the valuation (Scale AI's 2025 deal)
                amount, ratio = max(amount, amount * ratio * rng.uniform(0.3, 1.5)), rng.uniform(1.5, 5)
        shown_amount = reported(amount, rng)
        valuation = reported(_value(shown_amount) * ratio, rng) if i >= n_missing else None
        leads = ", ".join(rng.sample(investors, min(len(investors), rng.choice([1, 1, 1, 2, 3]))))
        rows.append((f"{MONTHS[month - 1]} {year}", label, shown_amount, valuation, leads))
        month += rng.randint(4, 24)
        year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
        amount *= _growth(rng, amount)
        ratio *= rng.uniform(0.7, 1.6)
    lead = rows[-1][4].split(", ")[0]
    after = " ".join(
        rng.sample(
            [
                f"The {rows[-1][1]} round was led by {lead}; {name} said it would use the money to hire and expand abroad.",
                f"{name} has not announced a round since {rows[-1][0]}.",
                f"Some early investors sold shares in the {rows[-1][1]} round.",
                f"Reports at the time put the {rows[-1][1]} valuation higher; the figure above is the one {name} confirmed.",
            ],
            rng.choice([1, 1, 2, 3]),
        )
    )
    after = f"{after} {about(rng, name, founded)}".strip()
    keywords = f"{name} funding rounds valuation {what.split(' for ')[-1]}"
    return Company(slug(name), name, str(founded), rng.choice(CITIES), intro, rows, after, keywords)


# ---------------------------------------------------------------- the method


def _value(shown: str) -> float:
    return float(shown.strip("$")[:-1]) * float("1" + SCALE[shown[-1]])


def literal(shown: str) -> str:
    """``$4.5M`` -> ``4.5e6``: a page's figure as a calculator (and Python) number."""
    return shown.strip("$")[:-1] + SCALE[shown[-1]]


def ratio_expression(c: Company) -> str:
    """The calculator's mean ratio over the rows with both figures, in ``4.5e9/250e6`` terms
    (llmos-smol copies the page's own figures instead: ``smol_data.ratio_of``)."""
    known = [f"{literal(val)}/{literal(amount)}" for _, _, amount, val, _ in c.rows if val]
    return f"mean({', '.join(known)})"


CELL = """ratio = {ratio}
rows = page_tables()[0].iloc[:, :4].values.tolist()
import csv, datetime
def usd(s): return float(s.strip("$")[:-1]) * {{"K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}}[s[-1]]
table = []
for date, name, amount, valuation in rows:
    imp = valuation == "not disclosed"
    v = usd(amount) * ratio if imp else usd(valuation)
    table.append((datetime.datetime.strptime(date, "%b %Y"), name, usd(amount), v, imp))
with open("valuations.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["date", "round", "amount_usd", "valuation_usd", "imputed"])
    for d, name, a, v, imp in table:
        w.writerow([d.strftime("%Y-%m"), name, round(a), round(v), str(imp).lower()])
t = np.array([d.year + (d.month - 0.5) / 12 for d, *_ in table])
v = np.array([r[3] for r in table])
imp = np.array([r[4] for r in table])
b, a = np.polyfit(t, np.log10(v), 1)
end = t[-1] + 3
f = np.linspace(t[0], end, 50)
plt.figure(figsize=(8, 5))
plt.semilogy(t[~imp], v[~imp], "o", label="reported")
plt.semilogy(t[imp], v[imp], "s", mfc="none", label="imputed")
plt.semilogy(f, 10 ** (a + b * f), "--", label="exponential trend")
name = read_page().split(" funding rounds")[0].split("# ")[-1]
plt.title(f"{{name}} valuations"); plt.xlabel("year"); plt.ylabel("valuation (USD)"); plt.legend()
plt.savefig("valuations.png", dpi=100); plt.close()
print(f"growth x{{10 ** b:.2f}} per year; imputed: {{', '.join(r[1] for r in table if r[4])}}; trend {{end:.0f}}: ${{10 ** (a + b * end) / 1e9:,.1f}}B")"""


def python_cell(c: Company, ratio: str) -> str:
    """The one python call: the calculator's ratio, and the rows read by code from the page
    the model opened (``page_tables()``: the sandbox holds every page the model has read)."""
    return CELL.format(ratio=ratio)


def cell_output(c: Company, ratio: str) -> str:
    """What :func:`python_cell` prints, computed the same way (numpy), without a sandbox."""
    import numpy as np

    r = float(ratio)
    t, v, imputed = [], [], []
    for date, name, amount, val, _ in c.rows:
        month, year = date.split()
        t.append(int(year) + (MONTHS.index(month) + 1 - 0.5) / 12)
        v.append(_value(amount) * r if val is None else _value(val))
        if val is None:
            imputed.append(name)
    b, a = np.polyfit(np.array(t), np.log10(np.array(v)), 1)
    end = t[-1] + 3
    return f"growth x{10**b:.2f} per year; imputed: {', '.join(imputed)}; trend {end:.0f}: ${10 ** (a + b * end) / 1e9:,.1f}B"
