"""The plain chat of the llmos-smol curriculum, in the base model's own words (issue 25).

Contract
--------
* :func:`chat_prompts` lists the everyday prompts the fine-tune trains on: greetings, explanations,
  tips, poems, short writing, advice. None is one of the benchmark's held-out prompts
  (``benchmarks/data/chat_prompts.txt``) or its dev prompts (a test checks both).
* :func:`chat_answers` asks the base model itself (SmolLM2 through llama.cpp, every tool listed as
  the kernel lists them) and caches its answers: the targets are its own words, so the fine-tune
  keeps its manners. An answer is kept only if it ends without a call and :func:`fits` the prompt
  (a greeting greets back, no echo of the prompt, no code unasked).

Not covered: judging whether an answer is *true*. The base model's answers stay as it gave them,
mistakes included ("Bananas are rich in vitamin C"); the fine-tune learns manners and endings
from them, not facts.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

from llmos.cpu.base import Sampling
from llmos.dialects import smol
from llmos.dialects.base import Turn

TOPICS = (
    "photosynthesis",
    "the water cycle",
    "compound interest",
    "how vaccines work",
    "why the sky is blue",
    "black holes",
    "how a refrigerator works",
    "inflation",
    "the immune system",
    "plate tectonics",
    "how bees make honey",
    "DNA",
    "the stock market",
    "how airplanes fly",
    "recycling",
    "the moon's phases",
    "electric cars",
    "volcanoes",
    "machine learning",
    "the internet",
    "sleep",
    "rainbows",
    "gravity",
    "tides",
    "coffee",
    "the Roman Empire",
)
TIPS = (
    "staying focused while studying",
    "saving money on groceries",
    "falling asleep faster",
    "learning a new language",
    "keeping houseplants alive",
    "running a first 5k",
    "writing a cover letter",
    "cooking rice",
    "staying hydrated",
    "organizing a small closet",
    "preparing for a job interview",
    "taking better photos with a phone",
)
POEMS = (
    "the ocean",
    "autumn leaves",
    "a cat on a windowsill",
    "city lights",
    "a rainy morning",
    "mountains",
    "friendship",
)
GREETINGS = (
    "hi",
    "hello!",
    "hey there",
    "good evening",
    "hi, what's your name?",
    "who made you?",
    "are you a robot?",
    "how's it going?",
    "thank you, that helped",
    "see you later",
    "can you introduce yourself?",
    "nice to meet you",
    "hello, what are you?",
    "hey, tell me about yourself",
    "hi! what should I call you?",
    "good afternoon",
    "hello there, are you an AI?",
    "hi, is anyone there?",
    "hey, what's up?",
    "morning!",
)
# A greeting is answered with one: the base model, asked "hello!" with every tool listed, often answers
# "How can I assist you?" or introduces itself without a hello, and a fine-tune trained on that greets no one.
SALUTATION = re.compile(r"(hi|hello|hey|good (morning|afternoon|evening)|morning)\b", re.IGNORECASE)


# Everyday requests beyond explanations: words, short writing, advice, opinions, small talk.
# Written for this curriculum; a test checks that none is one of the benchmark's held-out prompts.
REQUESTS = (
    "What does the word 'meticulous' mean?",
    "Give me an antonym of 'ancient'.",
    "What is another word for 'tired'?",
    "Tell me a riddle.",
    "Tell me something interesting about elephants.",
    "Share a fun fact about the planet Mars.",
    "Suggest a name for a small bakery.",
    "What could I call a pet goldfish?",
    "Propose a title for a short story about a lighthouse keeper.",
    "How do I apologize to a friend for being late?",
    "How do I ask my manager for a day off?",
    "Make this sentence friendlier: 'Your report is late.'",
    "Write a short note congratulating a colleague on a new job.",
    "Write a two-sentence story about a robot learning to paint.",
    "Write a short get-well message for my uncle.",
    "What is an adjective?",
    "What is the difference between a lake and a pond?",
    "Why do leaves change color in autumn?",
    "Why do cats purr?",
    "What makes a good teacher?",
    "Do you prefer summer or winter?",
    "What is a good way to spend a quiet Sunday?",
    "What games can children play indoors?",
    "How do I boil an egg?",
    "What should I bring to a picnic?",
    "How do I say 'good morning' in Spanish?",
    "Give me an inspiring sentence to start my day.",
    "Cheer me up, I had a long day.",
    "I'm bored. Any ideas?",
    "What is honesty?",
    "Write a haiku about a mountain lake.",
    "Write a short limerick about a cheerful frog.",
    "Describe a busy market in two sentences.",
    "What is the moral of the story of the boy who cried wolf?",
    "Is it a good idea to drink water before a run?",
    "Goodbye, and thanks!",
    # numbers that need no tool: a count of ideas, an age, a year
    "Give me 5 ideas for a weekend trip.",
    "Name 3 famous painters.",
    "Suggest 4 names for a puppy.",
    "Write a short toast for my parents' 25th anniversary.",
    "List 3 fruits that are rich in vitamin C.",
    "Share 2 tips for a 10-minute morning workout.",
    "What are 3 good habits to start in the new year?",
    "Write a card for a friend turning 40.",
    "How do I make hot chocolate?",
    "How do I brew coffee with a French press?",
    "What were the 1920s known for?",
    # words a tool's name or description shares (file, message, search, page, code) in requests that
    # need none: the seed-53 round called a tool for a rewrite that named a file and for a message
    "Make this email kinder: 'Where is the invoice?'",
    "Rephrase this in a calmer tone: 'Call me back right now.'",
    "Rewrite this sentence more formally: 'Can you send the slides?'",
    "Write a polite reminder asking a colleague to share a document.",
    "Suggest a subject line for an email about a team lunch.",
    "Write a text message inviting a friend to dinner on Friday.",
    "Draft a short message wishing my grandmother a happy retirement.",
    "Compose a note welcoming a new neighbour to the street.",
    "Write a message to thank my team for their hard work this month.",
    "What is a PDF file?",
    "What is the difference between a file and a folder?",
    "How should I name my files so I can find them later?",
    "What is a web browser?",
    "What does a search engine do?",
    "What is a calculator used for in school?",
    "Explain what a web page is to my grandfather.",
    "Suggest a word that means the same as 'quick'.",
    "What's a word with the same meaning as 'angry'?",
    "Which word means the opposite of 'brave'?",
    "What are the steps to make a sandwich?",
    "How do I make a smoothie?",
    "How do I wash a wool sweater?",
)


def chat_prompts() -> list[str]:
    """The plain chat prompts the fine-tune is trained on (none from the benchmark's held-out list)."""
    prompts = list(GREETINGS)
    prompts += [f"Explain {topic} in simple terms." for topic in TOPICS]
    prompts += [f"Give me three tips for {tip}." for tip in TIPS]
    prompts += [f"Write a four-line poem about {theme}." for theme in POEMS]
    prompts += [f"In two sentences, what is {topic}?" for topic in TOPICS[::2]]
    return prompts + list(REQUESTS)


# When the greedy answer does not end (a loop) or holds a control token (a call), a few sampled
# answers with a repetition penalty are tried: greedy decoding loops on poems and greetings, and a
# prompt with no ending answer teaches the fine-tune nothing about ending.
RETRIES = tuple(Sampling(temperature=0.3, top_p=0.9, repeat_penalty=1.15, seed=seed) for seed in range(1, 7))


# The base model sometimes repeats the prompt back ("nice to meet you" answered "nice to meet you. …")
# or answers a card with a code block; a fine-tune trained on those echoes or writes code unasked.
CODE = re.compile(r"```|^\s*(def|import|class|print\()\b", re.MULTILINE)
ASKS_FOR_CODE = re.compile(r"\b(code|python|program|script|function)\b", re.IGNORECASE)
# A run of pictographs: the base model answered an invitation with 17 emoji and a made-up link, and the
# seed-55 round, trained on it, began three held-out messages with its first two emoji and ran to the budget.
SYMBOL_RUN = re.compile(r"(?:[\U0001F000-\U0001FAFF\u2600-\u27BF][\u200d\ufe0f]*){3}")


def fits(prompt: str, answer: str) -> bool:
    """Whether the base model's answer can be a target: a greeting's answer greets back, no answer
    starts by repeating the prompt, only a prompt that asks for code gets code, and no answer holds a
    run of three pictographs."""
    said, heard = (re.sub(r"\W+", " ", text).strip().lower() for text in (answer, prompt))
    if len(heard.split()) >= 3 and said.startswith(heard):  # a greeting may be answered with itself
        return False
    if CODE.search(answer) and not ASKS_FOR_CODE.search(prompt):
        return False
    if SYMBOL_RUN.search(answer):
        return False
    return not SALUTATION.match(prompt) or bool(SALUTATION.match(answer))


def chat_answers(model: str | Path, path: Path, tools: list[dict[str, Any]], max_tokens: int = 320) -> dict[str, str]:
    """The base model's own answers to :func:`chat_prompts`, rendered as the kernel would (smol
    dialect, every tool listed), cached in ``path``: greedy, else the first of :data:`RETRIES` that
    ends without a call and :func:`fits`; prompts with none are dropped (and not asked again)."""
    cached = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    answers = {p: cached[p] for p in chat_prompts() if p in cached and fits(p, cached[p])}
    asked = set(cached.get("_asked", [])) - set(cached)  # prompts with no answer that fits: not asked again
    missing = [p for p in chat_prompts() if p not in answers and p not in asked]
    if not missing:
        return answers
    from llmos.cpu.llama import LlamaCPU

    cpu = LlamaCPU(model, n_ctx=2048, n_threads=2)
    try:
        for prompt in missing:
            turns = [Turn("system", smol.DEFAULT_SYSTEM, id=0), Turn("user", prompt, id=1)]
            found = _ending_answer(cpu, smol.SmolDialect().render(turns, tools), max_tokens, prompt)
            if found:
                answers[prompt] = found
    finally:
        cpu.close()
    record = {**answers, "_asked": sorted(asked | set(missing))}
    path.write_text(json.dumps(record, indent=1, ensure_ascii=False), encoding="utf-8")
    return answers


def _ending_answer(cpu: Any, segments: list[Any], max_tokens: int, prompt: str) -> str | None:
    """The first answer (greedy, then :data:`RETRIES`) that ends with no control token before its end
    and :func:`fits` the prompt."""
    end = cpu.token_id(smol.IM_END)
    for sampling in (Sampling(temperature=0.0), *RETRIES):
        cpu.load(segments)
        pieces = list(cpu.generate(dataclasses.replace(sampling, max_tokens=max_tokens)))
        text = "".join(p.text for p in pieces)
        answer = text.removesuffix(smol.IM_END).strip()
        if (
            pieces
            and pieces[-1].token == end
            and answer
            and not any(p.control for p in pieces[:-1])
            and fits(prompt, answer)
        ):
            return answer
    return None
