# ruff: noqa: E501  (page prose and HTML templates read better unwrapped)
"""Writes the demo pages and index.json of this archive (run it after editing the facts below).

The pages imitate a real funding-data article: navigation, cookie banner, sidebar and footer
around one article with a funding-rounds table, so the browser's extraction is exercised.
Facts: as publicly reported, snapshot of 2025-06-30; "not disclosed" where no valuation was reported.
"""

import json
from pathlib import Path

from llmos_tiny.funding import SITE, SNAP, Company, funding_page, home_page

HERE = Path(__file__).resolve().parent
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

COMPANY_FACTS = {key: Company(key=key, **facts) for key, facts in COMPANIES.items()}


def page(key, c):
    return funding_page(COMPANY_FACTS[key], [o for k, o in COMPANY_FACTS.items() if k != key])


def main() -> None:
    index = {
        "format": "llmos-web-archive/1",
        "description": "Offline pages for the llmos valuation demo: funding rounds of Scale AI, Databricks and Hugging Face on a demo site (web.llmos.example) written by the llmos project. Facts as publicly reported, snapshot of 2025-06-30.",
        "pages": {},
    }
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
    home = home_page(list(COMPANY_FACTS.values()))
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


if __name__ == "__main__":
    main()
