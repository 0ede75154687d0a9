# ruff: noqa: E501  (page prose and HTML templates read better unwrapped)
"""Writes the demo pages and index.json of this archive (run it after editing the facts below).

The pages imitate a real funding-data article: navigation, cookie banner, sidebar and footer
around one article with a funding-rounds table, so the browser's extraction is exercised.
Facts: as publicly reported, snapshot of 2025-06-30; "not disclosed" where no valuation was reported.
"""

import html
import json
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
SNAP = "2025-06-30"
SITE = "https://web.llmos.example"
NOTE = (
    "Snapshot of 30 June 2025. Figures are as reported in the press at the time of each round, in US dollars, "
    "rounded; &ldquo;not disclosed&rdquo; means no post-money valuation was reported. Compiled by the llmos project "
    "for its offline demo from public reporting; check primary sources before relying on them."
)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


COMPANIES = {
    "scale-ai": dict(
        name="Scale AI",
        founded="2016",
        hq="San Francisco, California",
        intro="Scale AI, founded in 2016 by Alexandr Wang and Lucy Guo, sells data labelling, evaluation and data infrastructure for machine learning, with customers among autonomous-vehicle makers, AI labs and the US government.",
        rows=[
            ("Aug 2017", "Series A", "$4.5M", None, "Accel"),
            ("Aug 2018", "Series B", "$18M", None, "Index Ventures"),
            ("Aug 2019", "Series C", "$100M", "$1B", "Founders Fund"),
            ("Dec 2020", "Series D", "$155M", "$3.5B", "Tiger Global"),
            ("Apr 2021", "Series E", "$325M", "$7.3B", "Dragoneer, Greenoaks, Tiger Global"),
            ("May 2024", "Series F", "$1B", "$13.8B", "Accel"),
            ("Jun 2025", "Strategic investment (49% stake)", "$14.3B", "$29B", "Meta"),
        ],
        after="The June 2025 investment by Meta bought a minority stake (reported as 49%) rather than a priced venture round; it is listed because it set the most recent reported valuation. Alexandr Wang joined Meta as part of the deal.",
        keywords="Scale AI funding rounds valuation Alexandr Wang data labeling",
    ),
    "databricks": dict(
        name="Databricks",
        founded="2013",
        hq="San Francisco, California",
        intro="Databricks was founded in 2013 by the creators of Apache Spark at UC Berkeley. It sells a data and AI platform (the &ldquo;lakehouse&rdquo;) and is one of the most valuable privately held software companies.",
        rows=[
            ("Sep 2013", "Series A", "$13.9M", None, "Andreessen Horowitz"),
            ("Jun 2014", "Series B", "$33M", None, "NEA"),
            ("Mar 2016", "Series C", "$60M", None, "NEA"),
            ("Dec 2017", "Series D", "$140M", None, "Andreessen Horowitz"),
            ("Feb 2019", "Series E", "$250M", "$2.75B", "Andreessen Horowitz"),
            ("Oct 2019", "Series F", "$400M", "$6.2B", "Andreessen Horowitz"),
            ("Feb 2021", "Series G", "$1B", "$28B", "Franklin Templeton"),
            ("Aug 2021", "Series H", "$1.6B", "$38B", "Counterpoint Global (Morgan Stanley)"),
            ("Sep 2023", "Series I", "$500M", "$43B", "T. Rowe Price"),
            ("Dec 2024", "Series J", "$10B", "$62B", "Thrive Capital"),
        ],
        after="The Series J round of December 2024 was reported as one of the largest venture rounds ever; part of it was used to buy back shares from employees.",
        keywords="Databricks funding rounds valuation lakehouse Apache Spark",
    ),
    "hugging-face": dict(
        name="Hugging Face",
        founded="2016",
        hq="New York, New York",
        intro="Hugging Face started in 2016 as a chatbot app and became the hub where the machine-learning community shares models, datasets and demos, and the maintainer of the Transformers library.",
        rows=[
            ("May 2018", "Seed", "$4M", None, "a_capital"),
            ("Dec 2019", "Series A", "$15M", None, "Lux Capital"),
            ("Mar 2021", "Series B", "$40M", None, "Addition"),
            ("May 2022", "Series C", "$100M", "$2B", "Lux Capital"),
            ("Aug 2023", "Series D", "$235M", "$4.5B", "Salesforce Ventures"),
        ],
        after="The Series D round in August 2023 included Google, Amazon, Nvidia, Intel, AMD, Qualcomm, IBM and Salesforce.",
        keywords="Hugging Face funding rounds valuation Transformers model hub",
    ),
}

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


def page(key, c):
    name = c["name"]
    rows = []
    for date, rnd, amount, val, lead in c["rows"]:
        leads = ", ".join(f'<a href="/investors/{slug(who)}">{html.escape(who)}</a>' for who in lead.split(", "))
        rid = slug(rnd)
        rows.append(
            f'      <tr><td>{date}</td><td><a href="/companies/{key}/rounds/{rid}">{html.escape(rnd)}</a></td>'
            f"<td>{amount}</td><td>{val or 'not disclosed'}</td><td>{leads}</td></tr>"
        )
    known = [r for r in c["rows"] if r[3]]
    related = "".join(
        f'<li><a href="/companies/{k}/funding">{o["name"]}</a></li>' for k, o in COMPANIES.items() if k != key
    )
    body = f"""<main id="content">
<article class="company-profile">
  <header class="article-header">
    <h1>{name} funding rounds and valuation history</h1>
    <p class="byline">By the Private Markets Review data desk &middot; <time datetime="{SNAP}">snapshot of 30 June 2025</time></p>
  </header>
  <p>{c["intro"]} Founded: {c["founded"]}. Headquarters: {c["hq"]}.</p>
  <p class="snapshot-note"><strong>About these figures.</strong> {NOTE}</p>
  <h2>Funding rounds</h2>
  <p>The table lists each priced round {name} has announced, with the amount raised, the post-money valuation where one was reported, and the lead investors. {len(known)} of {len(c["rows"])} rounds have a reported valuation.</p>
  <table class="funding-rounds">
    <caption>{name} funding rounds (as reported; snapshot {SNAP})</caption>
    <thead>
      <tr><th>Date</th><th>Round</th><th>Amount raised</th><th>Post-money valuation</th><th>Lead investors</th></tr>
    </thead>
    <tbody>
{chr(10).join(rows)}
    </tbody>
  </table>
  <h2>Notes</h2>
  <p>{c["after"]}</p>
  <p>Earlier rounds were often announced without a valuation. A common way to estimate the missing ones is to assume the share of the company sold in a round, amount raised divided by post-money valuation, was similar to that of rounds where both are known; such estimates are rough.</p>
  <div class="share-buttons"><a href="/share?x">Share on X</a> <a href="/share?li">Share on LinkedIn</a></div>
</article>
</main>
"""
    title = f"{name} funding rounds and valuation history | Private Markets Review"
    desc = f"Every reported {name} funding round: date, amount raised, post-money valuation, lead investors. Snapshot {SNAP}."
    return HEAD.format(title=title, desc=desc, name=name) + body + FOOT.format(related=related)


index = {
    "format": "llmos-web-archive/1",
    "description": "Offline pages for the llmos valuation demo: funding rounds of Scale AI, Databricks and Hugging Face on a demo site (web.llmos.example) written by the llmos project. Facts as publicly reported, snapshot of 2025-06-30.",
    "pages": {},
}
home_links = []
for key, c in COMPANIES.items():
    f = f"pages/{key}-funding.html"
    (HERE / f).write_text(page(key, c), encoding="utf-8")
    url = f"{SITE}/companies/{key}/funding"
    index["pages"][url] = {
        "file": f,
        "content_type": "text/html",
        "charset": "utf-8",
        "status": 200,
        "final_url": url,
        "recorded": f"{SNAP}T00:00:00Z",
        "title": f"{c['name']} funding rounds and valuation history",
        "keywords": c["keywords"],
    }
    home_links.append(f'<li><a href="/companies/{key}/funding">{c["name"]}</a>: funding rounds and valuations</li>')
home = (
    HEAD.format(
        title="Private Markets Review: companies",
        desc="Funding histories of private technology companies.",
        name="Companies",
    )
    + f"""<main>
<h1>Companies</h1>
<p>Funding histories of private technology companies, as reported. Snapshot of {SNAP}.</p>
<ul>{"".join(home_links)}</ul>
</main>
"""
    + FOOT.format(related="")
)
(HERE / "pages" / "companies.html").write_text(home, encoding="utf-8")
for u in (f"{SITE}/companies/", f"{SITE}/"):
    index["pages"][u] = {
        "file": "pages/companies.html",
        "content_type": "text/html",
        "charset": "utf-8",
        "status": 200,
        "final_url": f"{SITE}/companies/",
        "recorded": f"{SNAP}T00:00:00Z",
        "title": "Private Markets Review: companies",
        "keywords": "companies list",
    }
(HERE / "index.json").write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")
