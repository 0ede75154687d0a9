# ruff: noqa: E501  (page prose and HTML templates read better unwrapped)
"""The llmos-smol curriculum: a general assistant's conversations in the smol dialect (issue 25).

Contract
--------
* :func:`conversations` returns lists of :class:`~llmos.dialects.base.Turn` written in the smol
  dialect (:mod:`llmos.dialects.smol`); :func:`encode` renders one exactly as the kernel does and
  tokenizes it with the model's own tokenizer (llama.cpp): markup and the model's chunks with
  special parsing on, content with it off, the loss on the model's chunks only.
* Tasks: plain chat answered by the base model itself (the ``chats`` passed in, from
  :func:`llmos_tiny.smol_chat.chat_answers`: its own words, so the fine-tune keeps its manners), arithmetic through the calculator (numbers with thousands
  separators too), data work through python, look-ups through search and open (with injected
  pages), recall of a paged-out page, images, tool errors and the retry or the honest answer after
  them, funding pages in several layouts, currencies and ways of saying "undisclosed", the mean
  valuation/amount ratio by calculator (the model first lists every round, with its valuation where the
  page gives one, :func:`ratio_working`; the calculator's terms then copy that list's pairs as the page
  writes them, ``$4.5B/$250M``, which the calculator reads: copying is what a small model does well,
  converting scales is not), differences below zero (the answer keeps the sign), and the valuation
  task (phrasings in :data:`VALUATION_PROMPTS`, with a first message that states the plan; a python
  cell, :data:`READ_CELL`, reads the table and prints the rounds with both figures as the calculator's
  terms, and :data:`TABLE_AND_PLOT_CELL` writes the table and the plot). A conversation holds one to
  three tasks, so follow-up questions come after earlier answers.
* Held out of training, for :mod:`benchmarks.tiny_eval`: the ``prose`` layout family of funding
  pages (:data:`HELD_OUT_LAYOUTS`), the demo's task prompt (:data:`llmos_tiny.funding.TASK_PROMPT`),
  the three archived companies (every company here is invented), and the plain chat prompts of
  ``benchmarks/data/chat_prompts.txt`` (a test checks that none of them is in :mod:`llmos_tiny.smol_chat`).

The general tasks come from :mod:`llmos_tiny.curriculum` (written in the llmos dialect, whose
call and end markers :func:`smolify` rewrites); the real apps produce every tool result
(:class:`~llmos_tiny.world.World`). Not covered: multi-call messages, languages other than
English, pages other than HTML, the python cell on pages without a table.
"""

from __future__ import annotations

import html
import random
from collections.abc import Callable, Sequence

from llmos.dialects import llmos as lm
from llmos.dialects import smol
from llmos.dialects.base import Turn
from llmos_tiny import curriculum, funding
from llmos_tiny.curriculum import answer, call, lead_in, tool_turn
from llmos_tiny.world import World, all_tool_names
from llmos_tiny.world import tool_specs as specs_for

LAYOUTS = ("table", "renamed_table", "list", "story", "prose")
# "prose" never is in training: tiny_eval's held-out pages use it. "story" is the curriculum's own
# running text (issue 25 asks for prose pages): other sentences, other order of the facts, two rounds
# to a paragraph, so "prose" stays a family the model has not read (a test checks the two share no
# sentence template).
HELD_OUT_LAYOUTS = ("prose",)
TRAIN_LAYOUTS = tuple(layout for layout in LAYOUTS if layout not in HELD_OUT_LAYOUTS)
CURRENCIES = (("$", ""), ("€", ""), ("£", ""), ("USD ", ""), ("EUR ", ""))
UNDISCLOSED = ("not disclosed", "undisclosed", "n/a", "not reported", "—", "unknown")
SCALES = {"K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}
WORDS = {"K": "thousand", "M": "million", "B": "billion", "T": "trillion"}


def smolify(turns: list[Turn]) -> list[Turn]:
    """The llmos dialect's call and end markers in the model's chunks become the smol dialect's."""
    for turn in turns:
        if turn.role == "assistant":
            text = turn.text.replace(lm.CALL, smol.CALL).replace(lm.CALL_END, smol.CALL_END)
            turn.text = text.replace(lm.END, smol.IM_END)
        elif turn.role == "system":
            turn.text = smol.DEFAULT_SYSTEM
    return turns


# ---------------------------------------------------------------- money as pages write it


def figure(shown: str, style: int, currency: tuple[str, str]) -> str:
    """A table figure (``$4.5M``) in a page's style (``€4.5M``, ``USD 4.5 million``, ``£4,500,000``).

    The calculator reads each of them as written, so the model's ratio copies the page's figures."""
    number, unit = float(shown.strip("$")[:-1]), shown[-1]
    symbol = currency[0]
    if style == 0:
        return f"{symbol}{number:g}{unit}"
    if style == 1:
        return f"{symbol}{number:g} {WORDS[unit]}"
    return f"{symbol}{round(number * SCALES[unit]):,}"


# ---------------------------------------------------------------- funding pages in several layouts


Pairs = list[tuple[str, str, str]]  # the rounds with both figures: (round, amount, valuation) as the page writes them
Rounds = list[tuple[str, str, str | None]]  # every round, in page order; None: its valuation is not disclosed


def table_pairs(c: funding.Company) -> Pairs:
    """:data:`Pairs` of the demo's table page (``funding.funding_page``)."""
    return pairs_of(table_rounds(c))


def table_rounds(c: funding.Company) -> Rounds:
    """:data:`Rounds` of the demo's table page."""
    return [(rnd, amount, value or None) for _, rnd, amount, value, _ in c.rows]


def pairs_of(rounds: Rounds) -> Pairs:
    return [(rnd, amount, value) for rnd, amount, value in rounds if value]


def ratio_working(rounds: Rounds) -> str:
    """The model's words before the ratio's calculator call: every round in page order, its amount
    as the page writes it and, where the page gives one, ``at`` its valuation; the calculator's terms
    then copy the lines with both figures from a few tokens back, not from a page a thousand tokens
    up. Every round, not only those with both figures: on the held-out prose, seed 59 (which listed
    only those) took the amounts from the first round on and the valuations from the first valued
    round on, pairing each valuation with a neighbour's amount. A round with no valuation simply has
    no ``at``: a phrase for "undisclosed" on every such line would repeat, and the DRY penalty the
    model decodes with (``FineTune.sampling``) bends repeated phrases."""
    lines = "".join(f"\n- {rnd}: raised {amount}" + (f" at {value}" if value else "") for rnd, amount, value in rounds)
    return (
        f"The rounds, with each valuation the page gives:{lines}\nThe mean valuation/amount ratio of those with both:"
    )


def ratio_of(pairs: Pairs) -> str:
    """The calculator's expression for the mean valuation/amount ratio over ``pairs``."""
    return f"mean({', '.join(f'{value}/{amount}' for _, amount, value in pairs)})"


def funding_page(c: funding.Company, layout: str, rng: random.Random) -> tuple[str, Rounds]:
    """The company's funding page in ``layout`` and its :data:`Rounds`."""
    if layout == "table":
        return funding.funding_page(c, []), table_rounds(c)
    style, currency, undisclosed = rng.randrange(3), rng.choice(CURRENCIES), rng.choice(UNDISCLOSED)
    rows, rounds = [], []
    for date, rnd, amount, value, lead in c.rows:
        shown_amount = figure(amount, style, currency)
        shown_value = figure(value, style, currency) if value else undisclosed
        rounds.append((rnd, shown_amount, shown_value if value else None))
        rows.append((date, rnd, shown_amount, shown_value, lead, bool(value)))
    render = {"renamed_table": _renamed_table, "list": _listing, "story": _story, "prose": _prose}[layout]
    body = render(c, rows, rng)
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(c.title)}</title></head><body>"
        f"<nav><a href='/'>Home</a> <a href='/companies/'>Companies</a></nav><main><article>"
        f"<h1>{html.escape(c.name)}: funding history</h1><p>{html.escape(c.intro)}</p>{body}"
        f"<p>{html.escape(c.after)}</p></article></main><footer><p>Private markets notes</p></footer></body></html>"
    )
    return page, rounds


def _renamed_table(c: funding.Company, rows: list[tuple], rng: random.Random) -> str:
    columns = [("Round", 1), ("Announced", 0), ("Post-money", 3), ("Raised", 2), ("Led by", 4)]
    if rng.random() < 0.5:
        columns = [("When", 0), ("Stage", 1), ("Capital raised", 2), ("Valuation (post)", 3), ("Investors", 4)]
    head = "".join(f"<th>{name}</th>" for name, _ in columns)
    lines = ["".join(f"<td>{html.escape(str(row[i]))}</td>" for _, i in columns) for row in rows]
    body = "".join(f"<tr>{line}</tr>" for line in lines)
    return f"<h2>Rounds</h2><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _listing(c: funding.Company, rows: list[tuple], rng: random.Random) -> str:
    items = []
    for date, rnd, amount, value, lead, _ in rows:
        item = rng.choice(
            [
                f"<strong>{rnd}</strong> ({date}): raised {amount}; post-money valuation {value}; led by {lead}.",
                f"{date} &ndash; {rnd}: {amount} raised, valued at {value} (post-money). Lead: {lead}.",
            ]
        )
        items.append(f"<li>{item}</li>")
    return f"<h2>Funding rounds</h2><ul>{''.join(items)}</ul>"


# Several orders of the facts, the valuation before the amount in some: the seed-55 and seed-57
# rounds, trained on the first three and two alone, paired the held-out prose's figures by position
# (every amount in page order against the disclosed valuations in page order).
STORY_KNOWN = (
    "{lead} led the {rnd} in {date}: {amount} for {name}, which was valued at {value} afterwards.",
    "The {rnd} ({date}) brought in {amount} and valued {name} at {value}; {lead} led it.",
    "{name} closed its {rnd} in {date}, taking {amount} from {lead} at a {value} valuation.",
    "Valued at {value} after it, {name} took {amount} in the {rnd} ({date}), with {lead} leading.",
    "{date} saw the {rnd}: {lead} and others invested {amount}, putting {name} at {value}.",
    "A {value} valuation came with the {rnd} of {date}, when {lead} backed {name} with {amount}.",
    "For its {rnd}, {name} got {amount} ({lead}, {date}); that priced the company at {value}.",
    "{amount} arrived in {date} with the {rnd}. {lead} headed it, and {name} was then worth {value}.",
)
STORY_UNKNOWN = (
    "The {rnd} came in {date}: {amount} from {lead}, valuation {value}.",
    "{lead} put {amount} into the {rnd} ({date}); its valuation: {value}.",
    "In the {rnd} ({date}) {name} took {amount} from {lead}; what it was worth then is {value}.",
    "{date}: a {rnd} of {amount}, {lead} leading, with the valuation {value}.",
    "{name} got {amount} from {lead} for its {rnd} in {date} (valuation: {value}).",
)


def _story(c: funding.Company, rows: list[tuple], rng: random.Random) -> str:
    text = _running_text(c, rows, lambda known: rng.choice(STORY_KNOWN if known else STORY_UNKNOWN), 2)
    return "<h2>How it was funded</h2>" + text


PROSE_KNOWN = (
    "In {date}, {name} raised {amount} in its {rnd} round, led by {lead}, at a post-money valuation of {value}."
)
PROSE_UNKNOWN = "In {date}, it raised {amount} in a {rnd} round led by {lead}; the valuation was {value}."


def _prose(c: funding.Company, rows: list[tuple], rng: random.Random) -> str:
    return _running_text(c, rows, lambda known: PROSE_KNOWN if known else PROSE_UNKNOWN, 3)


def _running_text(c: funding.Company, rows: list[tuple], template: Callable[[bool], str], per_paragraph: int) -> str:
    """A sentence a round (``template(known)`` says which), ``per_paragraph`` of them to a paragraph."""
    sentences = [
        template(known).format(lead=lead, rnd=rnd, date=date, amount=amount, name=c.name, value=value)
        for date, rnd, amount, value, lead, known in rows
    ]
    paragraphs = [" ".join(sentences[i : i + per_paragraph]) for i in range(0, len(sentences), per_paragraph)]
    return "".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)


def _funding_world(rng: random.Random, world: World, layouts: Sequence[str], min_rounds: int = 3):
    """A company's funding page in one of ``layouts`` beside a few other companies' pages."""
    company = funding.random_company(rng, min_rounds)
    layout = rng.choice(list(layouts))
    page, rounds = funding_page(company, layout, rng)
    world.add(company.url, page, company.title, company.keywords)
    for _ in range(rng.randint(1, 3)):
        other = funding.random_company(rng)
        world.add(other.url, funding_page(other, rng.choice(list(layouts)), rng)[0], other.title, other.keywords)
    return company, layout, rounds


# ---------------------------------------------------------------- tasks


# The ratio question's pages: running text twice as often as each other layout, since a sentence
# holds each pair in an order of its own where a table row or a list item has one.
RATIO_LAYOUTS = (*TRAIN_LAYOUTS, "story")


def ratio_question(rng: random.Random, world: World, layouts: Sequence[str] = RATIO_LAYOUTS) -> list[Turn]:
    """Search, open the funding page (any layout), the mean valuation/amount ratio by calculator."""
    company, layout, rounds = _funding_world(rng, world, layouts)
    pairs = pairs_of(rounds)
    query, expression = f"{company.name} funding rounds", ratio_of(pairs)
    listing, opened = world.call("search", query=query), world.call("open", url=company.url)
    ratio = world.call("calculator", expression=expression)
    known = len(pairs)
    return [
        Turn("user", rng.choice(curriculum.RATIO_PROMPTS).format(name=company.name), meta={"layout": layout}),
        call("search", lead_in(rng, [curriculum.SEARCH_FIRST]), query=query),
        tool_turn(listing, rng),
        call("open", "", url=company.url),
        tool_turn(opened, rng),
        call("calculator", ratio_working(rounds), expression=expression),
        tool_turn(ratio, rng),
        answer(
            f"Over the {known} rounds of {company.name} with both figures reported, the mean valuation/amount ratio is {ratio.text}."
        ),
    ]


# The valuation's python work in two cells a 135M model can write from memory. The first reads the table by
# code and prints the rounds with both figures as the calculator's terms: the seed-47 round (stop 38), which
# listed those rounds from the page in its own words, skipped rows, took neighbours' figures and swapped
# amount and valuation in 18 of 20 held-out companies. Its calculator call then copies one line from just
# above. The second imputes, writes the table and draws the plot in one go: the same round, asked for the
# plot in a cell of its own after the table's, wrote the table's cell again. Both keep that round's lines
# as they were, in the same order; only the print of the terms and the cells' boundaries are new.
READ_CELL = """df = page_tables()[0].iloc[:, :4]
df.columns = ["date", "round", "amount_usd", "valuation_usd"]
known = df[df.valuation_usd.map(money).notna()]
print("valuation/amount:", ", ".join(known.valuation_usd + "/" + known.amount_usd))
df["date"] = pd.to_datetime(df.date, format="%b %Y")
df["amount_usd"] = df.amount_usd.map(money)
df["valuation_usd"] = df.valuation_usd.map(money)
df["imputed"] = df.valuation_usd.isna()"""
TABLE_AND_PLOT_CELL = """ratio = {ratio}
df.loc[df.imputed, "valuation_usd"] = df.amount_usd * ratio
df.to_csv("valuations.csv", index=False, date_format="%Y-%m", float_format="%.0f")
print("imputed:", ", ".join(df["round"][df.imputed]))
t = df.date.dt.year + (df.date.dt.month - 0.5) / 12
b, a = np.polyfit(t, np.log10(df.valuation_usd), 1)
end = t.max() + 3
f = np.linspace(t.min(), end, 50)
plt.semilogy(t, df.valuation_usd, "o", f, 10 ** (a + b * f), "--")
plt.semilogy(t[df.imputed], df.valuation_usd[df.imputed], "s", mfc="none", ms=12)
plt.title("{name} valuations")
plt.savefig("valuations.png"); plt.close()
print(f"growth x{{10 ** b:.2f}} per year; trend {{end:.0f}}: ${{10 ** (a + b * end) / 1e9:,.1f}}B")"""


# The valuation task as users might ask for it, short and long, in words of their own: the demo's prompt
# (funding.TASK_PROMPT) is held out, and a test checks that no phrasing here shares six words in a row with it.
VALUATION_PROMPTS = (
    *curriculum.SHORT_PROMPTS,
    "I need a valuation history for {name}. Look up its funding rounds online, fill in each valuation that was "
    "never disclosed by scaling that round's amount by the average valuation-to-amount ratio of the disclosed "
    "rounds (get that average from the calculator), save the table as valuations.csv and chart it as "
    "valuations.png on a log axis with a fitted exponential trend carried a few years forward. Then tell me what "
    "you found.",
    "Please do a small research job on {name}: 1) find the web page with its funding rounds; 2) with the "
    "calculator, get the mean of valuation/amount over the rounds that report both; 3) use it to estimate the "
    "valuations that are missing; 4) with python, save valuations.csv (date, round, amount_usd, valuation_usd, "
    "imputed) and valuations.png, a log-scale chart with an exponential fit extended three years; 5) sum up the "
    "growth rate, the estimated rounds and the projection.",
    "Build me a dataset of {name}'s funding rounds (valuations.csv) and a chart of its valuations "
    "(valuations.png, log scale, trend line extrapolated). Where no valuation was reported, estimate one as the "
    "amount raised times the average valuation/amount ratio, computed with the calculator. Summarize the growth "
    "at the end.",
    "How has {name}'s valuation grown? Get its rounds from the web, impute the undisclosed valuations (amount "
    "times the mean valuation/amount ratio from the calculator), then write valuations.csv and plot "
    "valuations.png with an exponential trend on a log scale, and explain the trend in a few sentences.",
    "Look into how {name} was financed. Some of its rounds come without a post-money figure; estimate those by "
    "multiplying the money raised by the average ratio of valuation to amount among the rounds that have both "
    "numbers, which you should work out with the calculator. Next, use python to store every round in "
    "valuations.csv, one row each, with YYYY-MM dates and an imputed flag, and draw valuations.png: valuations "
    "on a logarithmic y axis, estimated points with another marker, and a log-linear trend projected three years "
    "ahead. End with a short summary of the yearly growth, the estimated rounds and the projected value.",
)
# The valuation's first words say the whole plan: a ratio question ends after the calculator, the valuation
# goes on to python, and a small model decides which while the user's words are still close behind it.
VALUATION_PLAN = (
    "I'll search for the funding rounds, read their table with python, work out the mean valuation/amount "
    "ratio with the calculator, then write the table and the plot with python."
)

# The calculator's lead-in says what the ratio is for: right after its result the model decides between
# the ratio question's answer and the valuation's second python cell, and the seed-49 round answered the
# Databricks demo there as a ratio question ("Over the 6 rounds of Databricks …", stop 40).
VALUATION_RATIO_LEAD_IN = "Their mean valuation/amount ratio, for the imputed valuations, the table and the plot:"


# The ratio's first copy sometimes breaks, and the model copies it again: the seed-51 round (stop 42)
# copied 9 pairs without the closing parenthesis, got the calculator's "missing ')'", and never
# called the calculator again (a python cell that did not compile, then loops). The tool-error task
# only retries short arithmetic, so the valuation's own retry is trained here.
RATIO_SLIP_SHARE = 0.2  # of valuations
RATIO_RETRY_LEAD_IN = "The calculator could not read that; the terms again, copied whole from the line above:"


def slipped(expression: str, rng: random.Random) -> str:
    """``expression`` (a :func:`ratio_of`) with a copy slip the calculator rejects: its closing
    parenthesis dropped, a term's ``/`` dropped, or the copy stopped inside its last term."""
    kind = rng.randrange(3)
    if kind == 0:
        return expression[:-1]
    if kind == 1:
        cut = rng.choice([i for i, c in enumerate(expression) if c == "/"])
        return expression[:cut] + expression[cut + 1 :]
    return expression[: expression.rindex("/") + 1]


def ratio_steps(rng: random.Random, world: World, expression: str, ratio) -> list[Turn]:
    """The valuation's calculator call and its result; in :data:`RATIO_SLIP_SHARE` of them a first
    call with a :func:`slipped` copy comes first (not a target) with the calculator's real error."""
    steps = [call("calculator", VALUATION_RATIO_LEAD_IN, expression=expression), tool_turn(ratio, rng)]
    if rng.random() >= RATIO_SLIP_SHARE:
        return steps
    wrong = slipped(expression, rng)
    failed = world.call("calculator", expression=wrong)
    if not failed.is_error:
        raise AssertionError(f"a slipped ratio the calculator accepts: {wrong!r}")
    first = call("calculator", VALUATION_RATIO_LEAD_IN, expression=wrong)
    first.meta["train"] = False  # the mistake is context, not a target
    retry = call("calculator", RATIO_RETRY_LEAD_IN, expression=expression)
    return [first, tool_turn(failed, rng), retry, steps[1]]


def valuation(rng: random.Random, world: World) -> list[Turn]:
    """The valuation task in its own phrasings (the demo's own prompt is held out), on the demo's table page:
    search, open, :data:`READ_CELL`, the mean ratio by calculator over the terms it printed,
    :data:`TABLE_AND_PLOT_CELL`, a summary of what that printed (:func:`ratio_steps`: sometimes the
    ratio's first copy fails and is copied again)."""
    company = curriculum.funding_site(rng, world)
    prompt = rng.choice(VALUATION_PROMPTS).format(name=company.name)
    query, pairs = f"{company.name} funding rounds", table_pairs(company)
    terms = ", ".join(f"{value}/{amount}" for _, amount, value in pairs)
    listing, opened = world.call("search", query=query), world.call("open", url=company.url)
    ratio = world.call("calculator", expression=ratio_of(pairs))
    printed = funding.cell_output(company, ratio.text)
    growth, imputed, trend = printed.split("; ")  # the cell prints the imputed rounds first
    cell = TABLE_AND_PLOT_CELL.format(ratio=ratio.text, name=company.name)
    return [
        Turn("user", prompt),
        call("search", VALUATION_PLAN, query=query),
        tool_turn(listing, rng),
        call("open", "", url=company.url),
        tool_turn(opened, rng),
        call("python", "First I'll read the table with python.", code=READ_CELL),
        curriculum.page(f"valuation/amount: {terms}", "python", rng.randint(1, 400)),
        *ratio_steps(rng, world, ratio_of(pairs), ratio),
        call("python", "Now the imputed valuations, the table and the plot.", code=cell),
        curriculum.page(
            f"{imputed}\n{growth}; {trend}\nfiles: valuations.csv, valuations.png", "python", rng.randint(1, 400)
        ),
        answer(curriculum.valuation_summary(company.name, printed, ratio.text)),
    ]


def grouped_arithmetic(rng: random.Random, world: World) -> list[Turn]:
    """Arithmetic on numbers written with thousands separators, as people type them."""
    p, n = rng.choice([5, 8, 10, 12, 15, 20, 25, 30, 35, 60]), rng.randint(1001, 99999)
    if (p, n) == (15, 1240):  # the TUI check of issue 25
        n += 1
    kind = rng.randrange(3)
    if kind == 0:
        question, expression = (
            rng.choice([f"What is {p}% of {n:,}?", f"Calculate {p} percent of {n:,}.", f"{p}% of {n:,}?"]),
            f"{p}% of {n}",
        )
    elif kind == 1:
        a, b = rng.randint(1001, 999999), rng.randint(1001, 999999)
        question, expression = rng.choice([f"Add {a:,} and {b:,}.", f"What's {a:,} + {b:,}?"]), f"{a}+{b}"
    else:
        a, b = rng.randint(1001, 99999), rng.randint(2, 99)
        question, expression = (
            rng.choice([f"Split {a:,} into {b} equal parts.", f"What is {a:,} divided by {b}?"]),
            f"{a}/{b}",
        )
    value = world.call("calculator", expression=expression)
    return [
        Turn("user", question),
        call("calculator", lead_in(rng, ["Let me calculate that."]), expression=expression),
        tool_turn(value, rng),
        answer(rng.choice([f"The answer is {value.text}.", f"It is {value.text}."])),
    ]


def negative_result(rng: random.Random, world: World) -> list[Turn]:
    """Differences that come out below zero, which the model wrote without their sign (round 5's
    calculator misses): the operands in the order the question gives them, the answer keeps the minus."""
    a, b = rng.randint(2, 999), rng.randint(2, 999)
    a, b = min(a, b), max(a, b) + (a == b)
    question = rng.choice(
        [f"What is {a} minus {b}?", f"Subtract {b} from {a}.", f"Take {b} away from {a}.", f"{a} - {b} = ?",
         f"I have ${a} and spend ${b}. What is my balance?", f"The temperature is {a} degrees and drops by {b}. What is it now?"]
    )  # fmt: skip
    value = world.call("calculator", expression=f"{a}-{b}")
    return [
        Turn("user", question),
        call("calculator", lead_in(rng, ["Let me calculate that."]), expression=f"{a}-{b}"),
        tool_turn(value, rng),
        answer(rng.choice([f"{a} - {b} = {value.text}.", f"The result is negative: {value.text}."])),
    ]


def tool_error(rng: random.Random, world: World) -> list[Turn]:
    """A call that fails, then a corrected call (calculator) or an honest answer (search, open)."""
    kind = rng.randrange(3)
    if kind == 0:
        a, b = rng.randint(2, 999), rng.randint(2, 999)
        wrong, right = rng.choice(
            [(f"{a} x {b}", f"{a}*{b}"), (f"{a} times {b}", f"{a}*{b}"), (f"{a} divided by {b}", f"{a}/{b}")]
        )
        first = call("calculator", "", expression=wrong)
        first.meta["train"] = False  # the mistake is context, not a target
        value = world.call("calculator", expression=right)
        return [
            Turn("user", rng.choice([f"What is {wrong}?", f"Work out {wrong}."])),
            first,
            tool_turn(world.call("calculator", expression=wrong), rng),
            call("calculator", "I'll write the operator instead.", expression=right),
            tool_turn(value, rng),
            answer(f"{wrong} is {value.text}."),
        ]
    subject = funding.company_name(rng)
    if kind == 1:
        query = f"{subject} {rng.choice(['headquarters', 'founders', 'revenue'])}"
        return [
            Turn("user", f"Look up the {query.split()[-1]} of {subject}."),
            call("search", lead_in(rng, ["Let me search."]), query=query),
            tool_turn(world.call("search", query=query), rng),
            answer(
                f"I searched for {query} and found no results, so I can't tell you; it may be listed under another name."
            ),
        ]
    url = f"https://{subject.lower().replace(' ', '')}.example.com/about"
    failed = tool_turn(world.call("open", url=url), rng)
    failed.text = failed.text.replace(str(world.root), "/srv/web-archive")  # the same data from the same seed
    return [
        Turn("user", f"Open {url} and tell me what it says."),
        call("open", "", url=url),
        failed,
        answer(f"I could not open {url}: the page is not available, so I can't say what it contains."),
    ]


# ---------------------------------------------------------------- conversations

Task = Callable[[random.Random, World], list[Turn]]
TASKS: list[tuple[Task, float]] = [
    (curriculum.arithmetic, 0.10),
    (grouped_arithmetic, 0.05),
    (negative_result, 0.04),
    (curriculum.data_question, 0.06),
    (curriculum.lookup, 0.09),
    (curriculum.injected_lookup, 0.04),
    (curriculum.recall_task, 0.03),
    (curriculum.image, 0.03),
    (tool_error, 0.06),
    # the valuation task's weakest steps in the eval are the ratio and then calling python at all
    # (the ratio questions end after the calculator): the valuation counts only as a first task
    (ratio_question, 0.24),  # 0.15 up to seed 57; the prose layouts are the one target left
    (valuation, 0.24),  # 0.30 up to seed 57
]
CHAT_SHARE = 0.32  # of tasks: plain chat, answered in the base model's words


def conversation(rng: random.Random, world: World, chats: dict[str, str], max_tasks: int = 3) -> list[Turn]:
    """A system prompt, then one to ``max_tasks`` tasks; the valuation task is alone, with the demo's tools."""
    world.reset()
    turns: list[Turn] = []
    names: list[str] = []
    tools = None
    for _ in range(rng.randint(1, max_tasks)):
        if chats and rng.random() < CHAT_SHARE:
            prompt = rng.choice(sorted(chats))
            turns += [Turn("user", prompt), answer(chats[prompt])]
            names.append("chat")
            continue
        task = rng.choices([t for t, _ in TASKS], weights=[w for _, w in TASKS])[0]
        if task is valuation and names:
            continue
        turns += task(rng, world)
        names.append(task.__name__)
        if task is valuation:
            tools = specs_for(curriculum.DEMO_TOOLS)
            break
    system = Turn("system", smol.DEFAULT_SYSTEM, meta={"tasks": names, "tools": tools or curriculum.tool_specs(rng)})
    turns = smolify([system, *turns])
    for i, turn in enumerate(turns):
        turn.id = i
    return turns


def conversations(n: int, seed: int, chats: dict[str, str], max_tasks: int = 3) -> list[list[Turn]]:
    rng = random.Random(seed)
    with World() as world:
        return [conversation(rng, world, chats, max_tasks) for _ in range(n)]


def encode(
    turns: list[Turn], tokenize: Callable[[str, bool], list[int]], bos: int | None
) -> tuple[list[int], list[int]]:
    """Token ids and loss mask (1 on the model's own chunks) of a conversation as the kernel renders it."""
    trainable = {f"t{turn.id}": turn.meta.get("train", True) for turn in turns}
    tools = turns[0].meta.get("tools") or specs_for(all_tool_names())
    ids: list[int] = [bos] if bos is not None else []
    mask: list[int] = [0] * len(ids)
    for segment in smol.SmolDialect().render(turns, tools, generate=False):
        is_model = segment.tag == "assistant"
        tokens = tokenize(segment.text, segment.trusted or is_model)
        ids += tokens
        mask += [int(is_model and trainable.get(segment.key, True))] * len(tokens)
    return ids, mask
