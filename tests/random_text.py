"""Seeded random texts that are hard on token estimates: prose, digits, URLs, code, accents, CJK, emoji."""

from __future__ import annotations

import random
import string

_WORDS = (
    "the of and to in is that for it as with was on be by this are from at or an have not which "
    "router model budget cost token latency quality provider request answer ceiling cheap premium "
    "sea haiku recursion explain child summary translate function deadline breaker"
).split()
_ACCENTED = "àáâãäåæçèéêëìíîïñòóôõöøœùúûüýÿßđłńśźżčřšžğış"
_CJK = "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己话儿者向情部正名定女问力机给等几很业最间新什打便位因重被走电四第门相次东政海口使教西再平真听世气信北少关并内加化由却代军产入先山五太水万市眼体别处总才场师书比住员九笑性通目华报立马命张活难神数件安表原车白应路期叫死常提感金何更反合放做系计或司利受光王果亲界及今京务制解各任至清物台象记边共风战干接它许八特觉望直服毛林题建南度统色字请交爱让认算论百吃义科怎元社术结六功指思非流每青管夫连远资队跟带花快条院变联言权往展该领传近留红治决周保达办运武半候七必城父强步完革深区即求品士转量空甚众技轻程告江语英基派满式李息写呢识极令黄德收脸钱党倒未持"
_EMOJI = "😀😂🥲😍🤖🚀🎉🔥💡✅❌🌊🍣🧠🦀👩‍💻🏳️‍🌈👍🏽🇯🇵"
_CODE = [
    "def f(x):\n    return {k: v for k, v in x.items() if v is not None}\n",
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }\n",
    "SELECT id, name FROM users WHERE created_at > '2024-01-01' ORDER BY id DESC;\n",
    "const xs = ys.map((y) => y ** 2).filter(Boolean);\n",
    '{"key": [1, 2.5, null, true], "nested": {"a": "b"}}\n',
    "#include <stdio.h>\nint main(void){printf(\"%d\\n\", 42);}\n",
]


def _url(rng: random.Random) -> str:
    host = "".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 12)))
    path = "/".join("".join(rng.choices(string.ascii_letters + string.digits + "-_", k=rng.randint(1, 10)))
                    for _ in range(rng.randint(0, 4)))
    query = f"?q={rng.randint(0, 10**9)}&lang=en" if rng.random() < 0.5 else ""
    return f"https://{host}.example.com/{path}{query}"


def _piece(rng: random.Random) -> str:
    kind = rng.choice(("english", "english", "digits", "url", "code", "accented", "cjk", "emoji", "symbols"))
    if kind == "english":
        return " ".join(rng.choices(_WORDS, k=rng.randint(1, 40))) + rng.choice((". ", ", ", "! ", "\n"))
    if kind == "digits":
        return " ".join(str(rng.randint(0, 10 ** rng.randint(1, 18))) for _ in range(rng.randint(1, 20))) + " "
    if kind == "url":
        return _url(rng) + " "
    if kind == "code":
        return rng.choice(_CODE)
    if kind == "accented":
        return "".join(rng.choice(_ACCENTED + "aeiou ") for _ in range(rng.randint(1, 80)))
    if kind == "cjk":
        return "".join(rng.choices(_CJK, k=rng.randint(1, 120)))
    if kind == "emoji":
        return "".join(rng.choices(_EMOJI, k=rng.randint(1, 30)))
    return "".join(rng.choices(string.punctuation + " \t", k=rng.randint(1, 60)))


def random_text(rng: random.Random, max_chars: int = 4000) -> str:
    """A mixed text of 1 to about ``max_chars`` characters."""
    target = int(max_chars ** rng.random())  # log-uniform sizes: many short, some long
    parts: list[str] = []
    size = 0
    while size < max(target, 1):
        part = _piece(rng)
        parts.append(part)
        size += len(part)
    return "".join(parts)[: max(target, 1)] or "x"
