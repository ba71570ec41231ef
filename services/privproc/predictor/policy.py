"""A conservative, rule-based safety policy for the predictor's input and output.

What it is: a deterministic screen of compiled, case-insensitive,
word-boundary regular expressions, one set per harm category
(:class:`RefusalCode`), run over text after Unicode NFKC normalisation,
removal of accents and invisible format characters, case folding, and a few
cheap de-obfuscation views (spaced-out letters such as ``k i l l`` or
``k.i.l.l`` joined up; digits and ``@``/``$`` inside words read as letters,
``b0mb``, ``k1ll``, ``ki11``). The patterns describe *requests and intents*
(how to build a bomb, how to hurt someone, suicide methods, sexual content
involving minors, synthesising or buying hard drugs, writing malware,
eliminationist or dehumanising statements about groups); they do not list
slurs, and nothing here keeps lists of offensive words.

What it is not: a classifier. It does not understand context, irony or
other languages, and a determined writer gets past it (unusual spellings,
paraphrase, runs of repeated letters such as ``kiiill``). It errs on the
side of refusing: a request refused in doubt costs one user a summary,
while an answer that should not have been given cannot be taken back.

Decided false positives and negatives (tests pin these down):

- Figurative speech about oneself passes: "this meeting is killing me",
  "my boss will kill me", "you killed it at the demo", "kill the process",
  "the talk bombed". Violence patterns need a person as the object (him,
  her, them, someone, my neighbour...), and ``me`` is not one.
- Threats against someone else are refused even when they are jokes
  ("I'll kill him if he is late again"), and so is "I could kill myself"
  (self-harm). Conservative by design.
- Benign compounds are removed before matching (glue gun, nerf gun, bath
  bomb, photobomb...), so "make a bath bomb" passes; "send him an email"
  style objects (message, text, invite...) never count as violence.
- A chat that mentions children together with nudity or sexual words within
  a few words is refused as ``sexual_minors``, even when innocent ("the kids
  ran around naked in the garden"): there is no reliable cheap way to tell.
- The screen runs over all texts joined, so a request split across two
  messages is still seen; rarely, words from neighbouring messages combine.

An operator can replace this class: :class:`~privproc.predictor.tasks.TaskProcessor`
takes anything with ``screen_input`` and ``screen_output``
(:class:`ContentPolicy`). Refusals carry only a :class:`RefusalCode`, never
the text that matched: that text is message content.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Protocol


class RefusalCode(enum.StrEnum):
    """Codes the client receives in ``ProcessResponse.refusal_reason``."""

    VIOLENCE = "violence"
    WEAPONS = "weapons"
    SELF_HARM = "self_harm"
    SEXUAL_MINORS = "sexual_minors"
    ILLEGAL_DRUGS = "illegal_drugs"
    MALWARE = "malware"
    HATE = "hate"
    #: The model's output failed the output screen.
    OUTPUT_BLOCKED = "output_blocked"
    UNSUPPORTED_TASK = "unsupported_task"
    UNSUPPORTED_STYLE = "unsupported_style"
    EMPTY_INPUT = "empty_input"
    INPUT_TOO_LARGE = "input_too_large"
    #: The model produced nothing usable.
    NO_OUTPUT = "no_output"


#: The categories :class:`SafetyPolicy` screens for (the others are processing outcomes).
HARM_CATEGORIES: tuple[RefusalCode, ...] = (
    RefusalCode.VIOLENCE,
    RefusalCode.WEAPONS,
    RefusalCode.SELF_HARM,
    RefusalCode.SEXUAL_MINORS,
    RefusalCode.ILLEGAL_DRUGS,
    RefusalCode.MALWARE,
    RefusalCode.HATE,
)


class ContentPolicy(Protocol):
    """What the task processor needs of a safety policy (an operator may supply their own)."""

    def screen_input(self, texts: Sequence[str]) -> RefusalCode | None:
        """The refusal code for a request's texts, or ``None`` to process them."""
        ...

    def screen_output(self, text: str) -> RefusalCode | None:
        """The refusal code for a model output, or ``None`` to return it."""
        ...


# --- normalisation ------------------------------------------------------------

_WHITESPACE = re.compile(r"\s+")
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u02bc": "'", "`": "'", "\u2010": "-", "\u2011": "-"})
# Three or more single characters separated by spacing punctuation: "k i l l", "k.i.l.l", "b-o-m-b".
_SPACED = re.compile(r"(?<![\w@$])(?:[\w@$][ .\-_*+~|/\\]+){2,}[\w@$](?![\w@$])")
_SPACING = re.compile(r"[ .\-_*+~|/\\]+")
# A word mixing letters with digits or @/$: only these are read as leetspeak ("14th" stays a date).
_LEET_WORD = re.compile(r"\b(?=[\w@$]*[a-z])(?=[\w@$]*[0-9@$])[\w@$]+")
_LEET_I = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})
_LEET_L = str.maketrans({"0": "o", "1": "l", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})
# Harmless compounds whose second word would otherwise look like a weapon.
_BENIGN = re.compile(
    r"\b(?:hot glue|glue|nerf|water|squirt|staple|nail|heat|spray|toy|paint|bubble|massage|caulk|"
    r"radar|laser|price|top|big|smoking|starting|grease) guns?\b"
    r"|\bguns? (?:safes?|racks?|cabinets?|shows?|control|laws?|violence)\b"
    r"|\b(?:bath|seed|glitter|photo|f|da|the da|love|cherry|stink) ?-?bombs?\b|\bphotobomb\w*"
)


def normalise(text: str) -> str:
    """NFKC, no accents or invisible format characters, case-folded, single spaces."""
    text = unicodedata.normalize("NFKC", text)
    # Accents and zero-width / bidi characters are a cheap way to break a word: drop them.
    decomposed = unicodedata.normalize("NFD", text)
    text = "".join(ch for ch in decomposed if unicodedata.category(ch) not in {"Mn", "Me", "Cf"})
    text = unicodedata.normalize("NFC", text).casefold().translate(_QUOTES)
    return _WHITESPACE.sub(" ", text).strip()


def _join(match: re.Match[str]) -> str:
    return _SPACING.sub("", match.group(0))


def _join_after_article(match: re.Match[str]) -> str:
    letters = _SPACING.sub("", match.group(0))
    if len(letters) > 3 and letters[0] in "ai":
        return letters[0] + " " + letters[1:]
    return letters


def _deleet(text: str, table: dict[int, str]) -> str:
    return _LEET_WORD.sub(lambda match: match.group(0).translate(table), text)


def views(text: str) -> list[str]:
    """The normalised text and its de-obfuscated readings (each screened on its own)."""
    base = _BENIGN.sub("thing", normalise(text))
    joined = _SPACED.sub(_join, base)
    # "make a b o m b" joins to "make abomb": also read a leading "a" or "i" as its own word.
    split = _SPACED.sub(_join_after_article, base)
    found = [base, joined, split, _deleet(joined, _LEET_I), _deleet(joined, _LEET_L)]
    unique: list[str] = []
    for view in found:
        if view not in unique:
            unique.append(view)
    return unique


# --- patterns -------------------------------------------------------------------


def _gap(words: int) -> str:
    """Up to ``words`` arbitrary words between two parts of a pattern."""
    return rf"(?:\S+\s+){{0,{words}}}"


def _any(*alternatives: str) -> str:
    return "(?:" + "|".join(alternatives) + ")"


# Asking how to do something, or planning it.
_HOWTO = _any(
    r"how",
    r"ways?",
    r"methods?",
    r"best way",
    r"easiest way",
    r"help me",
    r"teach me",
    r"show me",
    r"instructions?",
    r"steps?",
    r"guide",
    r"tutorial",
    r"recipe",
    r"plan(?:ning)?",
    r"let'?s",
    r"should i",
    r"can i",
    r"trying to",
    r"gonna",
    r"wanna",
)
# The writer (or their group) intending to do something: "I'll", "we are going to", "I want to".
_SELF_INTENT = (
    r"(?:i|we)(?:'ll|'d|'m|'re| will| would| shall| am| are| want| need| plan| intend| should| could| must"
    r"| might| have to| gotta| gonna| wanna)"
)
_INTENT = _any(_HOWTO, _SELF_INTENT, r"want", r"going", r"will", r"intend")
_PERSONAL_INTENT = _any(_HOWTO, _SELF_INTENT)

_VIOLENT_VERB = _any(
    r"kill",
    r"murder",
    r"stab",
    r"strangle",
    r"choke",
    r"shoot",
    r"poison",
    r"drown",
    r"suffocate",
    r"behead",
    r"decapitate",
    r"torture",
    r"kidnap",
    r"abduct",
    r"maim",
    r"beat up",
    r"beat the shit out of",
    r"assassinate",
    r"hurt",
    r"harm",
    r"assault",
    r"rape",
    r"run over",
    r"set fire to",
)
_RELATION = _any(
    r"wife",
    r"husband",
    r"boss",
    r"mom",
    r"mum",
    r"mother",
    r"dad",
    r"father",
    r"brother",
    r"sister",
    r"neighbou?r",
    r"teacher",
    r"ex",
    r"girlfriend",
    r"boyfriend",
    r"partner",
    r"family",
    r"co-?worker",
    r"colleague",
    r"roommate",
    r"flatmate",
    r"friend",
    r"son",
    r"daughter",
    r"kid",
    r"child",
    r"classmate",
    r"landlord",
    r"manager",
)
_PERSON = _any(
    r"someone",
    r"somebody",
    r"anyone",
    r"anybody",
    r"everyone",
    r"everybody",
    r"people",
    r"a person",
    r"him",
    r"her",
    r"them",
    r"you",
    r"u",
    r"ya",
    rf"(?:my|his|her|their|your|our) {_RELATION}s?",
    r"(?:a|the|that|this) (?:child|kid|baby|woman|man|girl|boy|guy|cop|police officer|officer|judge|senator)",
    r"the (?:president|prime minister|police|cops|pope)",
    r"(?:a|the|my|our) (?:school|class|crowd|church|mosque|synagogue|temple)",
)
# "shoot him an email", "hurt her feelings": the person is not the object of violence.
_NOT_VIOLENT_OBJECT = (
    r"(?!'?s?\s+(?:an?\s+|the\s+|some\s+)?"
    r"(?:e-?mails?|messages?|texts?|notes?|lines?|dms?|invites?|invitations?|links?|reminders?|pings?|calls?|"
    r"msgs?|feelings|chances|pride|ego|reputation|business|sales|numbers|score|career|vibe|buzz|mood|"
    r"question|look|smile|photo|picture|video|shot)\b)"
)

_VIOLENCE = [
    # Only the writer's own intent counts: "this price will kill them" is business talk.
    rf"\b{_PERSONAL_INTENT}\b\s+{_gap(4)}{_VIOLENT_VERB}\s+{_PERSON}\b{_NOT_VIOLENT_OBJECT}",
    rf"\bhow\b\s+{_gap(3)}get away with (?:murder|killing|it after killing)\b",
    r"\b(?:hire|find|get|pay|need)\s+(?:\S+\s+){0,2}(?:hitman|hit man|assassin|contract killer)s?\b",
    r"\b(?:shoot up|bomb|blow up|set fire to|burn down|attack)\s+(?:a |the |my |our |this |that )?"
    r"(?:school|church|mosque|synagogue|temple|mall|concert|stadium|hospital|airport|train station|"
    r"subway|crowd|parade|kindergarten|daycare)\b",
    rf"\b(?:plan|planning|carry out|commit|do|doing|organi[sz]e)\s+{_gap(1)}(?:a |an )?"
    r"(?:mass shooting|school shooting|massacre|terror(?:ist)? attack|stabbing spree|killing spree)\b",
]

_MAKE = _any(
    r"make(?! sure)",
    r"making",
    r"build",
    r"building",
    r"assemble",
    r"construct",
    r"create",
    r"manufacture",
    r"produce",
    r"craft",
    r"rig",
    r"cook up",
    r"3d[- ]?print",
    r"print",
    r"convert",
    r"synthesi[sz]e",
    r"weaponi[sz]e",
    r"improvise",
    r"mix",
    r"brew",
)
_WEAPON = _any(
    r"(?:pipe |nail |car |dirty |letter |suicide |fertili[sz]er |homemade |home-made )?bombs?",
    r"explosives?",
    r"ieds?",
    r"grenades?",
    r"molotov(?: cocktails?)?",
    r"napalm",
    r"thermite",
    r"detonators?",
    r"landmines?",
    r"c-?4",
    r"semtex",
    r"tnt",
    r"anfo",
    r"tatp",
    r"gunpowder",
    r"black powder",
    r"(?:ghost |untraceable |unregistered |zip |homemade |home-made |3d[- ]printed |automatic )?guns?",
    r"firearms?",
    r"rifles?",
    r"pistols?",
    r"handguns?",
    r"shotguns?",
    r"silencers?",
    r"suppressors?",
    r"auto ?sears?",
    r"machine ?guns?",
    r"nerve (?:agents?|gas)",
    r"sarin",
    r"vx",
    r"ricin",
    r"anthrax",
    r"botulinum",
    r"mustard gas",
    r"chlorine gas",
    r"phosgene",
    r"(?:chemical|biological|bio|nuclear|radiological) ?-?weapons?",
    r"nuclear bombs?",
    r"nukes?",
)
_WEAPONS = [
    rf"\b{_INTENT}\b\s+{_gap(4)}{_MAKE}\s+{_gap(3)}{_WEAPON}\b",
    r"\bbomb[- ]?making\b",
    r"\b(?:convert|modify)\s+(?:\S+\s+){0,4}(?:to|into) (?:full[- ]?auto|fully automatic|automatic)\b",
    rf"\b{_WEAPON} (?:recipe|blueprints?|schematics?|instructions)\b",
    # Buying a gun is legal in many places: only untraceable guns and explosives count.
    rf"\b(?:{_INTENT}|where)\b\s+{_gap(4)}(?:buy|get|obtain|acquire|order)\s+{_gap(2)}"
    r"(?:(?:ghost|untraceable|unregistered|unserialized) guns?"
    r"|explosives|grenades|detonators|c-?4|semtex|tnt)\b",
    r"\b3d[- ]?print\w*\s+(?:\S+\s+){0,2}"
    r"(?:guns?|firearms?|pistols?|rifles?|lowers?|receivers?|auto ?sears?)\b",
    r"\bguns? without (?:a )?(?:background check|license|licence|serial numbers?)\b",
]

_SELF_HARM = [
    r"\b(?:kill|hang|shoot|poison|drown|starve|suffocate) (?:myself|my ?self)\b",
    rf"\b{_INTENT}\b\s+{_gap(3)}(?:hurt|harm|cut|burn|kill|hang|end) (?:myself|my ?self|my (?:own )?life)\b",
    r"\b(?:commit(?:ting)?|attempt(?:ing)?|thinking (?:about|of)|consider(?:ing)?|plan(?:ning)?) suicide\b",
    r"\bsuicide (?:methods?|plans?|notes?|pacts?|kits?|bags?|tips)\b",
    r"\b(?:how|ways?|best way|easiest way|quickest way|painless(?:ly)?)\b\s+"
    + _gap(4)
    + r"(?:die|commit suicide|kill (?:myself|yourself|oneself)|end (?:my|your|one'?s) (?:own )?life)\b",
    r"\bend(?:ing)? (?:my|it) (?:own )?(?:life|all)\b",
    r"\bi (?:want|wanna|wish i could|am going|'?m going|'?m gonna|am gonna) (?:to )?die\b",
    r"\b(?:lethal|fatal|deadly) (?:dose|amount|overdose)s?\b",
    r"\bhow (?:many|much)\b\s+"
    + _gap(5)
    + r"(?:to|would|will|does it take to|until i) (?:die|overdose|od|kill)\b",
    r"\boverdos(?:e|ing) on purpose\b",
    r"\b(?:kys|kms)\b",
    r"\b(?:you should|go|just) kill yourself\b",
    r"\bself[- ]?harm(?:ing)? (?:tips|methods|ideas|techniques|tricks)\b",
    r"\bslit(?:ting)? (?:my|your|his|her|their) (?:wrists?|throat)\b",
]

_SEXUAL = _any(
    r"sex",
    r"sexual(?:ly)?",
    r"sexy",
    r"nudes?",
    r"naked",
    r"porn\w*",
    r"erotic\w*",
    r"nsfw",
    r"lewd",
    r"molest\w*",
    r"grope",
    r"groping",
    r"fondl\w*",
    r"rape",
    r"raping",
    r"seduc\w*",
    r"intercourse",
    r"orgasm\w*",
    r"masturbat\w*",
    r"genitals?",
    r"onlyfans",
    r"hentai",
)
_MINOR = _any(
    r"child",
    r"children",
    r"kids?",
    r"minors?",
    r"underage",
    r"under-age",
    r"pre-?teens?",
    r"toddlers?",
    r"infants?",
    r"little (?:girl|boy)s?",
    r"young (?:girl|boy)s?",
    r"school ?girls?",
    r"school ?boys?",
    r"(?:1[0-7]|[1-9])[- ]?(?:yo|y/o|years?[- ]old|year-olds?)",
    r"teen(?:age)?(?:rs?)?",
)
_SEXUAL_MINORS = [
    rf"\b{_SEXUAL}\b\s*{_gap(6)}{_MINOR}\b",
    rf"\b{_MINOR}\b\s*{_gap(6)}{_SEXUAL}\b",
    r"\b(?:child porn\w*|csam|csem|lolicon|shotacon|jailbait"
    r"|pedo(?:phile|philia)?s?|paedo(?:phile|philia)?s?)\b",
]

_DRUG = _any(
    r"meth",
    r"methamphetamines?",
    r"crystal meth",
    r"amphetamines?",
    r"heroin",
    r"cocaine",
    r"crack cocaine",
    r"fentanyl",
    r"carfentanil",
    r"lsd",
    r"mdma",
    r"ecstasy",
    r"ghb",
    r"pcp",
    r"ketamine",
    r"dmt",
    r"opium",
    r"psilocybin",
    r"mescaline",
    r"bath salts",
    r"krokodil",
    r"desomorphine",
    r"nitazenes?",
)
_DRUG_MAKE = _any(
    r"make(?! sure)",
    r"making",
    r"cook",
    r"cooking",
    r"synthesi[sz]e",
    r"synthesi[sz]ing",
    r"synthesis of",
    r"produce",
    r"producing",
    r"manufacture",
    r"manufacturing",
    r"extract",
    r"extracting",
    r"brew",
    r"refine",
    r"isolate",
)
_ILLEGAL_DRUGS = [
    rf"\b{_DRUG_MAKE}\s+{_gap(3)}{_DRUG}\b",
    rf"\b{_DRUG} (?:lab|labs|recipe|synthesis|precursors?|production|cook)\b",
    r"\b(?:cook|make|rock up) crack\b",
    rf"\b(?:where|how)\b\s+{_gap(4)}(?:buy|get|score|order|source|find)\s+{_gap(3)}{_DRUG}\b",
    rf"\b(?:sell|selling|deal|dealing|smuggle|smuggling|traffic|trafficking)\s+{_gap(2)}{_DRUG}\b",
    r"\bprecursors? (?:for|of|to make)\b",
]

_MALWARE_THING = _any(
    r"malware",
    r"ransomware",
    r"key ?loggers?",
    r"trojans?",
    r"rootkits?",
    r"botnets?",
    r"spyware",
    r"stalkerware",
    r"(?:computer|network|self-?replicating) (?:worms?|viruse?s?)",
    r"backdoors?",
    r"(?:credential|password|cookie|info) ?-?stealers?",
    r"infostealers?",
    r"crypto-?jackers?",
    r"(?:hidden|stealth) (?:crypto)?miners?",
    r"ddos (?:tools?|scripts?|bots?)",
    r"phishing (?:kits?|pages?|sites?|e-?mails?|links?|campaigns?)",
    r"(?:fork|zip) bombs?",
    r"shellcode",
    r"remote access trojans?",
)
# Not "spread" ("don't spread the virus") nor "code"/"program" (nouns in ordinary tech talk).
_MALWARE_MAKE = _any(
    r"write",
    r"writing",
    r"create",
    r"creating",
    r"build",
    r"building",
    r"make(?! sure)",
    r"making",
    r"develop",
    r"developing",
    r"generate",
    r"deploy",
    r"deploying",
    r"install",
    r"installing",
    r"plant",
    r"planting",
    r"hide",
    r"obfuscate",
    r"sell",
    r"buy",
)
_HACK_TARGET = _any(
    r"accounts?",
    r"phones?",
    r"e-?mails?",
    r"instagram",
    r"facebook",
    r"snapchat",
    r"whatsapp",
    r"wi-?fi",
    r"computers?",
    r"laptops?",
    r"servers?",
    r"networks?",
    r"banks?",
    r"databases?",
    r"websites?",
    r"icloud",
    r"gmail",
    r"webcams?",
    r"cameras?",
)
_MALWARE = [
    rf"\b{_MALWARE_MAKE}\s+{_gap(4)}{_MALWARE_THING}\b",
    # A virus only with verbs of writing one: "I have a virus" is a cold.
    r"\b(?:write|code|program|create|make|build|develop)\s+(?:me\s+)?(?:an?\s+|some\s+|the\s+)?"
    r"(?:computer\s+)?viruse?s?\b(?!\s*(?:scanners?|scans?|protection|checkers?|definitions?|tests?))",
    r"\b(?:write|code|develop|build|create|make|give me)\s+(?:me\s+)?(?:an?|the|some|working|remote|"
    r"zero-?day|0-?day)\s+exploits?\b",
    rf"\b{_INTENT}\b\s+{_gap(3)}(?:hack|hacking|break) (?:into\s+)?{_gap(3)}{_HACK_TARGET}\b",
    rf"\b{_INTENT}\b\s+{_gap(3)}ddos\b",
    r"\bencrypt\w*\s+" + _gap(6) + r"(?:demand|ask for|pay|paying)\s+" + _gap(2) + r"ransom\b",
    r"\b(?:steal|stealing|harvest|harvesting|grab|grabbing|dump|dumping|phish|phishing)\s+"
    + _gap(2)
    + r"(?:passwords?|credentials|logins?|credit card(?: numbers?)?s?|card numbers|bank details)\b",
    r"\b(?:bypass|evade|evading|avoid)\s+" + _gap(2) + r"(?:antivirus|anti-virus|edr|windows defender)\b",
]

_GROUP = _any(
    r"jews",
    r"jewish people",
    r"muslims",
    r"christians",
    r"hindus",
    r"sikhs",
    r"buddhists",
    r"atheists",
    r"catholics",
    r"blacks",
    r"black people",
    r"whites",
    r"white people",
    r"asians",
    r"asian people",
    r"arabs",
    r"africans",
    r"mexicans",
    r"latinos",
    r"latinas",
    r"hispanics",
    r"immigrants",
    r"migrants",
    r"refugees",
    r"foreigners",
    r"gays",
    r"gay people",
    r"lesbians",
    r"homosexuals",
    r"trans people",
    r"transgender people",
    r"trans (?:women|men)",
    r"bisexuals",
    r"queers",
    r"women",
    r"men",
    r"disabled people",
    r"the disabled",
    r"gypsies",
    r"chinese people",
    r"indians",
    r"pakistanis",
    r"palestinians",
    r"israelis",
    r"indigenous people",
    r"natives",
)
_HATE = [
    r"\b(?:kill|exterminate|gas|eradicate|wipe out|get rid of|purge|lynch|genocide|cleanse|eliminate|shoot|"
    rf"hang|burn) (?:all (?:of )?)?(?:the |those |these )?{_GROUP}\b(?!')",
    rf"\b{_GROUP} (?:should|must|need to|needs to|deserve to|ought to|have to|will) (?:all )?"
    r"(?:die|be killed|be exterminated|be gassed|be shot|be hanged|be wiped out|be eradicated|burn|"
    r"be sterili[sz]ed|rot|not exist)\b",
    rf"\b{_GROUP} (?:are|is)\s+{_gap(2)}"
    r"(?:subhuman|sub-human|vermin|animals|parasites|cockroaches|rats|apes|monkeys|pigs|savages|"
    r"a disease|a plague|a cancer|inferior|filth|scum|not human|untermenschen|genetically inferior)\b",
    r"\b(?:heil hitler|sieg heil|white power|race war now)\b",
    rf"\bdeath to (?:all )?(?:the )?{_GROUP}\b",
]

_RULES: tuple[tuple[RefusalCode, tuple[str, ...]], ...] = (
    (RefusalCode.SEXUAL_MINORS, tuple(_SEXUAL_MINORS)),
    (RefusalCode.WEAPONS, tuple(_WEAPONS)),
    (RefusalCode.SELF_HARM, tuple(_SELF_HARM)),
    (RefusalCode.VIOLENCE, tuple(_VIOLENCE)),
    (RefusalCode.ILLEGAL_DRUGS, tuple(_ILLEGAL_DRUGS)),
    (RefusalCode.MALWARE, tuple(_MALWARE)),
    (RefusalCode.HATE, tuple(_HATE)),
)


# Outputs are held to more: a model's answer that says how to build a weapon or hurt someone is
# refused even without the asking or intending words the input patterns need ("First, build a...").
_OUTPUT_ONLY: tuple[tuple[RefusalCode, tuple[str, ...]], ...] = (
    (RefusalCode.WEAPONS, (rf"\b{_MAKE}\s+{_gap(3)}{_WEAPON}\b",)),
    (RefusalCode.VIOLENCE, (rf"\b{_VIOLENT_VERB}\s+{_PERSON}\b{_NOT_VIOLENT_OBJECT}",)),
)


def _compile(rules: Iterable[tuple[RefusalCode, Iterable[str]]]) -> list[tuple[RefusalCode, re.Pattern[str]]]:
    # One pattern per category: an alternation of its rules, matched case-insensitively.
    return [
        (code, re.compile("|".join(f"(?:{rule})" for rule in patterns), re.IGNORECASE))
        for code, patterns in rules
    ]


class SafetyPolicy:
    """Rule-based screen of requests and outputs (see the module docstring for its limits).

    Categories are checked in a fixed order, most severe first, so the same
    text always yields the same code.
    """

    def __init__(self) -> None:
        self._rules = _compile(_RULES)
        extra = dict(_OUTPUT_ONLY)
        self._output_rules = _compile((code, (*rules, *extra.get(code, ()))) for code, rules in _RULES)

    def categorise(self, text: str, *, output: bool = False) -> RefusalCode | None:
        """The first harm category ``text`` matches in any of its views, or ``None``.

        ``output`` applies the stricter rules for model outputs.
        """
        readings = views(text)
        for code, pattern in self._output_rules if output else self._rules:
            if any(pattern.search(reading) for reading in readings):
                return code
        return None

    def screen_input(self, texts: Sequence[str]) -> RefusalCode | None:
        """The harm category of a request's texts (screened together), or ``None``."""
        # Joined, so a request split over several messages is still seen whole.
        return self.categorise("\n".join(texts))

    def screen_output(self, text: str) -> RefusalCode | None:
        """``OUTPUT_BLOCKED`` when a model output matches any harm category, else ``None``.

        Outputs are screened with the input rules and a few stricter ones: instructions
        such as "build a pipe bomb" or "stab him" are refused without any intent words.
        """
        return RefusalCode.OUTPUT_BLOCKED if self.categorise(text, output=True) is not None else None


__all__ = ["HARM_CATEGORIES", "ContentPolicy", "RefusalCode", "SafetyPolicy", "normalise", "views"]
