r"""The safety policy's rules: word lists, and per harm category the rules written over them.

What it is: declarative tables, no logic. Each element is a small regular expression
(literals, ``(?:a|b)``, ``[abc]``, ``?``, and ``\w*`` at the end of a word) that
:mod:`privproc.predictor.matching` expands into phrases; :data:`RULES` lists each category's
rules in the order categories are checked, :data:`OUTPUT_ONLY` the stricter ones for model
outputs. :mod:`privproc.predictor.policy` compiles them once per process.

Why it is a module of its own: the tables are what a reviewer reads and changes, apart from the
machinery that reads texts and matches rules; as a table it is longer than other modules.
The rules describe requests and intents, and list no slurs or offensive words.
"""

from __future__ import annotations

from privproc.predictor.matching import Gap, RuleSpec
from privproc.wire.refusal import RefusalCode

# --- vocabulary -------------------------------------------------------------------


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
    "(?:an? |the |some )?"
    "(?:e-?mails?|messages?|texts?|notes?|lines?|dms?|invites?|invitations?|links?|reminders?|pings?|calls?|"
    "msgs?|feelings|chances|pride|ego|reputation|business|sales|numbers|score|career|vibe|buzz|mood|"
    "question|look|smile|photo|picture|video|shot)"
)

_MAKE = _any(
    r"make",
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
    r"make",
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
    r"make",
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
# Each rule: its elements in order, ``Gap(n)`` for up to n arbitrary words between two of them;
# adjacent elements follow each other directly. A rule with ``unless_next`` does not match when
# that element starts right after it.
WrittenRule = tuple[RuleSpec, str | None]

_VIOLENCE: list[WrittenRule] = [
    # Only the writer's own intent counts: "this price will kill them" is business talk.
    ([_PERSONAL_INTENT, Gap(4), _VIOLENT_VERB, _PERSON], _NOT_VIOLENT_OBJECT),
    (["how", Gap(3), "get away with (?:murder|killing|it after killing)"], None),
    (["(?:hire|find|get|pay|need)", Gap(2), "(?:hitman|hit man|assassin|contract killer)s?"], None),
    (
        [
            "(?:shoot up|bomb|blow up|set fire to|burn down|attack) (?:a |the |my |our |this |that )?"
            "(?:school|church|mosque|synagogue|temple|mall|concert|stadium|hospital|airport|train station|"
            "subway|crowd|parade|kindergarten|daycare)"
        ],
        None,
    ),
    (
        [
            "(?:plan|planning|carry out|commit|do|doing|organi[sz]e)",
            Gap(1),
            "(?:a |an )?(?:mass shooting|school shooting|massacre|terror(?:ist)? attack|stabbing spree"
            "|killing spree)",
        ],
        None,
    ),
]

_WEAPONS: list[WrittenRule] = [
    ([_INTENT, Gap(4), _MAKE, Gap(3), _WEAPON], None),
    (["bomb[- ]?making"], None),
    (["(?:convert|modify)", Gap(4), "(?:to|into) (?:full[- ]?auto|fully automatic|automatic)"], None),
    ([_WEAPON, "(?:recipe|blueprints?|schematics?|instructions)"], None),
    # Buying a gun is legal in many places: only untraceable guns and explosives count.
    (
        [
            _any(_INTENT, "where"),
            Gap(4),
            "(?:buy|get|obtain|acquire|order)",
            Gap(2),
            "(?:(?:ghost|untraceable|unregistered|unserialized) guns?"
            "|explosives|grenades|detonators|c-?4|semtex|tnt)",
        ],
        None,
    ),
    (
        ["3d[- ]?print\\w*", Gap(2), "(?:guns?|firearms?|pistols?|rifles?|lowers?|receivers?|auto ?sears?)"],
        None,
    ),
    (["guns? without (?:a )?(?:background check|license|licence|serial numbers?)"], None),
]

_SELF_HARM: list[WrittenRule] = [
    (["(?:kill|hang|shoot|poison|drown|starve|suffocate) (?:myself|my ?self)"], None),
    ([_INTENT, Gap(3), "(?:hurt|harm|cut|burn|kill|hang|end) (?:myself|my ?self|my (?:own )?life)"], None),
    (
        ["(?:commit(?:ting)?|attempt(?:ing)?|thinking (?:about|of)|consider(?:ing)?|plan(?:ning)?) suicide"],
        None,
    ),
    (["suicide (?:methods?|plans?|notes?|pacts?|kits?|bags?|tips)"], None),
    (
        [
            "(?:how|ways?|best way|easiest way|quickest way|painless(?:ly)?)",
            Gap(4),
            "(?:die|commit suicide|kill (?:myself|yourself|oneself)|end (?:my|your|one'?s) (?:own )?life)",
        ],
        None,
    ),
    (["end(?:ing)? (?:my|it) (?:own )?(?:life|all)"], None),
    (["i (?:want|wanna|wish i could|am going|'?m going|'?m gonna|am gonna) (?:to )?die"], None),
    (["(?:lethal|fatal|deadly) (?:dose|amount|overdose)s?"], None),
    (
        ["how (?:many|much)", Gap(5), "(?:to|would|will|does it take to|until i) (?:die|overdose|od|kill)"],
        None,
    ),
    (["overdos(?:e|ing) on purpose"], None),
    (["(?:kys|kms)"], None),
    (["(?:you should|go|just) kill yourself"], None),
    (["self[- ]?harm(?:ing)? (?:tips|methods|ideas|techniques|tricks)"], None),
    (["slit(?:ting)? (?:my|your|his|her|their) (?:wrists?|throat)"], None),
]

_SEXUAL_MINORS: list[WrittenRule] = [
    ([_SEXUAL, Gap(6), _MINOR], None),
    ([_MINOR, Gap(6), _SEXUAL], None),
    (
        [
            "(?:child porn\\w*|csam|csem|lolicon|shotacon|jailbait"
            "|pedo(?:phile|philia)?s?|paedo(?:phile|philia)?s?)"
        ],
        None,
    ),
]

_ILLEGAL_DRUGS: list[WrittenRule] = [
    ([_DRUG_MAKE, Gap(3), _DRUG], None),
    ([_DRUG, "(?:lab|labs|recipe|synthesis|precursors?|production|cook)"], None),
    (["(?:cook|make|rock up) crack"], None),
    (["(?:where|how)", Gap(4), "(?:buy|get|score|order|source|find)", Gap(3), _DRUG], None),
    (["(?:sell|selling|deal|dealing|smuggle|smuggling|traffic|trafficking)", Gap(2), _DRUG], None),
    (["precursors? (?:for|of|to make)"], None),
]

_MALWARE: list[WrittenRule] = [
    ([_MALWARE_MAKE, Gap(4), _MALWARE_THING], None),
    # A virus only with verbs of writing one: "I have a virus" is a cold.
    (
        [
            "(?:write|code|program|create|make|build|develop) (?:me )?(?:an? |some |the )?"
            "(?:computer )?viruse?s?"
        ],
        "(?:scanners?|scans?|protection|checkers?|definitions?|tests?)",
    ),
    (
        [
            "(?:write|code|develop|build|create|make|give me) (?:me )?(?:an?|the|some|working|remote|"
            "zero-?day|0-?day) exploits?"
        ],
        None,
    ),
    ([_INTENT, Gap(3), "(?:hack|hacking|break) into", Gap(3), _HACK_TARGET], None),
    ([_INTENT, Gap(3), "(?:hack|hacking|break)", Gap(3), _HACK_TARGET], None),
    ([_INTENT, Gap(3), "ddos"], None),
    (["encrypt\\w*", Gap(6), "(?:demand|ask for|pay|paying)", Gap(2), "ransom"], None),
    (
        [
            "(?:steal|stealing|harvest|harvesting|grab|grabbing|dump|dumping|phish|phishing)",
            Gap(2),
            "(?:passwords?|credentials|logins?|credit card(?: numbers?)?s?|card numbers|bank details)",
        ],
        None,
    ),
    (["(?:bypass|evade|evading|avoid)", Gap(2), "(?:antivirus|anti-virus|edr|windows defender)"], None),
]

_HATE: list[WrittenRule] = [
    (
        [
            "(?:kill|exterminate|gas|eradicate|wipe out|get rid of|purge|lynch|genocide|cleanse|eliminate"
            "|shoot|hang|burn)",
            "(?:all (?:of )?)?(?:the |those |these )?" + _GROUP,
        ],
        None,
    ),
    (
        [
            _GROUP,
            "(?:should|must|need to|needs to|deserve to|ought to|have to|will) (?:all )?"
            "(?:die|be killed|be exterminated|be gassed|be shot|be hanged|be wiped out|be eradicated|burn|"
            "be sterili[sz]ed|rot|not exist)",
        ],
        None,
    ),
    (
        [
            _GROUP,
            "(?:are|is)",
            Gap(2),
            "(?:subhuman|sub-human|vermin|animals|parasites|cockroaches|rats|apes|monkeys|pigs|savages|"
            "a disease|a plague|a cancer|inferior|filth|scum|not human|untermenschen|genetically inferior)",
        ],
        None,
    ),
    (["(?:heil hitler|sieg heil|white power|race war now)"], None),
    (["death to (?:all )?(?:the )?", _GROUP], None),
]

RULES: tuple[tuple[RefusalCode, list[WrittenRule]], ...] = (
    (RefusalCode.SEXUAL_MINORS, _SEXUAL_MINORS),
    (RefusalCode.WEAPONS, _WEAPONS),
    (RefusalCode.SELF_HARM, _SELF_HARM),
    (RefusalCode.VIOLENCE, _VIOLENCE),
    (RefusalCode.ILLEGAL_DRUGS, _ILLEGAL_DRUGS),
    (RefusalCode.MALWARE, _MALWARE),
    (RefusalCode.HATE, _HATE),
)

# Outputs are held to more: a model's answer that says how to build a weapon or hurt someone is
# refused even without the asking or intending words the input rules need ("First, build a...").
OUTPUT_ONLY: dict[RefusalCode, list[WrittenRule]] = {
    RefusalCode.WEAPONS: [([_MAKE, Gap(3), _WEAPON], None)],
    RefusalCode.VIOLENCE: [([_VIOLENT_VERB, _PERSON], _NOT_VIOLENT_OBJECT)],
}


__all__ = ["OUTPUT_ONLY", "RULES", "WrittenRule"]
