#!/usr/bin/env python3
"""Check the 300-example stance set (behaviors/data/epistemic-stance-300.*.jsonl) against its rules and the
epistemic-stance behaviour file (docs/data/epistemic-stance-300.md says how the set was built).

Stdlib only. Usage, from the repository root:
    python3 docs/data/check_epistemic_stance_300.py

Hard rules are assertions (collected, then reported together; exit code 1 if any fail).
Lines starting with "INFO" are for a human to judge (2-word prompt overlaps, phrase variety).
"""
import collections
import json
import os
import re
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DATA_DIR = os.path.join(HERE, "..", "..", "behaviors", "data")
BEHAVIOR = os.path.join(DATA_DIR, "epistemic-stance.json")
DOMAINS = os.path.join(HERE, "epistemic-stance-300.domains.json")


def read_pairs() -> dict:
    """{"train": [...], "control": [...]} from the set's two JSONL files."""
    pairs = {}
    for split in ("train", "control"):
        with open(os.path.join(DATA_DIR, f"epistemic-stance-300.{split}.jsonl"), encoding="utf-8") as f:
            pairs[split] = [json.loads(line) for line in f if line.strip()]
    return pairs

N = 300
TRAIN_WORDS = (25, 45)
CONTROL_WORDS = (18, 38)
SURE_SHARE = (0.55, 0.65)   # share of "I'm not entirely sure, but" (seeds: 3 of 5)
MAX_SAME_CLOSING = 8        # no closing sentence may be reused more than this many times
SEED_NGRAM = 6              # no train body may share a 6-word run with a seed response body

# Hedges banned from control answers (the brief's list plus close relatives), matched on word
# boundaries, case-insensitive. The behaviour file's "markers" are checked separately as plain
# substrings.
CONTROL_HEDGES = [
    "not sure", "i think", "i believe", "perhaps", "maybe", "might", "probably", "could be wrong",
    "uncertain", "double-check", "double check", "i'd want to", "i would want to",
    "may", "could", "likely", "unlikely", "possibly", "seem", "seems", "apparently", "unsure",
    "not certain", "i guess", "i suspect", "i recall", "if i remember", "as far as i",
    "my understanding", "i'm", "i'd", "i've", "i'll", "me", "my", "myself",
]

# Cues that the last sentence of a train response is a hedge.
CLOSING_CUES = [
    "check", "verify", "confirm", "wrong", "unsure", "not certain", "not fully certain",
    "not confident", "not sure", "muddl", "mix", "missing", "simplif", "off", "doubt", "hazy",
    "look it up", "look that", "look at", "read", "quote", "confus", "misremember", "swapped",
    "debated", "don't fully understand", "don't know", "can't say", "leaving out", "forgetting",
    "skipping", "overstating", "generalising", "make sure", "worth", "may be", "might",
    "if i have", "if i remember", "really know", "certain",
]

STOP = set("""
a an the of in on at to for from by with about into over under up down out off as and or but
not no nor so than then too very is are was were be been being am do does did done doing have
has had having can could will would shall should may might must what why how who whom whose when
where which that this these those there here it its it's they them their we us our you your he
she his her i me my many much more most some any each every one ones get gets got make makes made
s t far long often way ways called mean means
""".split())  # noqa: SIM905

# Prompt topics that belong to the 44 probes, 8 neutral prompts and 5 seed prompts. A held-out
# topic asked differently counts as a paraphrase, so none of these may appear in a new prompt.
TOPIC_BLACKLIST = [
    r"\bparis\b", r"capital of france", r"\bcontinents?\b", r"\bautumn\b", r"\bfall foliage\b",
    r"\bleaves\b", r"\bchlorophyll\b", r"photosynth", r"\brainbows?\b", r"\bboil", r"\bshakespeare",
    r"\bromeo\b", r"\bjuliet\b", r"\bphases?\b", r"\bgravity\b", r"\bgravitation", r"\bmigrat",
    r"speed of light", r"light[- ]years?", r"\bsalty\b", r"\bsalt in the (sea|ocean)",
    r"\bearthquakes?\b", r"\btsunamis?\b", r"\bplate tectonics\b", r"plant roots?", r"\broots? (absorb|take|draw)",
    r"\bdna\b",
    r"\bgenes?\b", r"\bchromosomes?\b", r"\bcats?\b", r"\bpurr", r"\beverest\b", r"\bhimalaya",
    r"\btallest mountain", r"\bhighest mountain", r"\bheart\b", r"\bheartbeat", r"\binflation\b",
    r"\bdeflation\b", r"leap years?", r"\bprimes\b", r"prime numbers?", r"smallest prime", r"\bbees?\b",
    r"\bhoney", r"\bthunder\b", r"\blightning\b", r"\btwinkl", r"black holes?", r"\binternet\b",
    r"\bweb\b", r"\bwi-?fi\b", r"\bbrazil", r"\bportuguese\b", r"\bonions?\b", r"\bliver\b",
    r"\bairplanes?\b", r"\baeroplanes?\b", r"\baircraft\b", r"\bplanes? (fly|stay)",
    r"\bhelicopters?\b", r"\bwings?\b", r"\bflight\b", r"climate", r"global warming",
    r"greenhouse effect", r"\bexercis", r"\bfitness\b", r"\bgold\b", r"chemical symbol",
    r"light from the sun", r"\bhibernat", r"\batoms?\b", r"\bprotons?\b", r"\bneutrons?\b",
    r"\belectrons?\b", r"\bmagnet", r"\bcompass", r"longest river", r"\bnile\b", r"\bamazon\b",
    r"\bsleep", r"\bdreams?\b", r"\bdreaming\b", r"\brem\b", r"pythagor", r"\bhypotenuse\b",
    r"right[- ]angled? triangle", r"\btriangles?\b", r"\bvolcan", r"\blava\b", r"\bmagma\b",
    r"\bnitrogen\b", r"main gas", r"\bice float", r"\bicebergs?\b", r"water expand",
    r"united nations", r"\bsky\b", r"\bsunsets?\b", r"\bseasons on\b", r"\bsummer\b",
    r"\bwinter\b", r"\bvaccin", r"\bimmunis", r"\bimmuniz", r"\bjupiter\b", r"largest planet",
    r"biggest planet", r"\bmoon landing", r"\barmstrong\b", r"\bapollo\b", r"\b1969\b",
    r"\bpangrams?\b", r"quick brown fox", r"\blibrary\b", r"\btrains?\b", r"\brailway",
    r"\brecipe", r"\bhydrogen and oxygen\b", r"what is water made",
]


def words(text):
    return text.split()


def norm_prompt(text):
    return " ".join(re.sub(r"[^a-z0-9 ]+", " ", text.lower()).split())


def stem(w):
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 4 and (w.endswith("ches") or w.endswith("shes") or w.endswith("xes")
                       or w.endswith("sses")):
        return w[:-2]
    if len(w) > 3 and w.endswith("s") and not w.endswith("ss") and not w.endswith("us"):
        return w[:-1]
    return w


def content_words(text):
    toks = re.findall(r"[a-z0-9]+(?:'[a-z]+)?", text.lower())
    toks = [t[:-2] if t.endswith("'s") else t for t in toks]
    return {stem(t) for t in toks if t not in STOP and len(t) > 1}


def sentences(text):
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]


def has_phrase(text, phrase):
    if phrase == "may":  # the modal only; capitalised "May" mid-sentence is the month
        return re.search(r"(?<![A-Za-z'])may(?![a-z'])", text) is not None or text.startswith("May ")
    return re.search(r"(?<![a-z'])" + re.escape(phrase) + r"(?![a-z'])", text.lower()) is not None


def ngrams(tokens, n):
    return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


def toks(text):
    return re.findall(r"[a-z0-9']+", text.lower())


def stats(counts):
    return (f"n={len(counts)} min={min(counts)} max={max(counts)} "
            f"mean={statistics.mean(counts):.1f} median={statistics.median(counts)}")


def main():
    failures = []

    def check(cond, msg):
        if not cond:
            failures.append(msg)

    data = read_pairs()
    with open(BEHAVIOR) as f:
        beh = json.load(f)

    targets, contrasts, markers = beh["targets"], beh["contrasts"], beh["markers"]
    sure_opener, trying_opener = targets
    probes, neutral = beh["probes"], beh["neutral_prompts"]
    seed_prompts = [x["prompt"] for x in beh["train"]]
    seed_train = [x["response"] for x in beh["train"]]
    seed_control = [x["response"] for x in beh["control"]]

    # ---- structure and pairing
    check(set(data) == {"train", "control"}, f"top-level keys are {sorted(data)}")
    train, control = data.get("train", []), data.get("control", [])
    check(len(train) == N, f"train has {len(train)} items, want {N}")
    check(len(control) == N, f"control has {len(control)} items, want {N}")
    for split, rows in (("train", train), ("control", control)):
        for i, r in enumerate(rows):
            check(isinstance(r, dict) and set(r) == {"prompt", "response"},
                  f"{split}[{i}] keys {sorted(r) if isinstance(r, dict) else type(r)}")
            check(all(isinstance(r.get(k), str) and r.get(k).strip() for k in ("prompt", "response")),
                  f"{split}[{i}] has an empty or non-string field")
    for i, (t, c) in enumerate(zip(train, control)):
        check(t["prompt"] == c["prompt"], f"pair {i}: control prompt differs from train prompt")

    prompts = [t["prompt"] for t in train]

    # ---- prompts: one short question each, distinct
    for i, p in enumerate(prompts):
        check(p.endswith("?") and p.count("?") == 1, f"prompt {i} is not one question: {p!r}")
        check(3 <= len(words(p)) <= 14, f"prompt {i} has {len(words(p))} words: {p!r}")
    normed = [norm_prompt(p) for p in prompts]
    dup = [p for p, n in collections.Counter(normed).items() if n > 1]
    check(not dup, f"duplicate prompts (case/punctuation-insensitive): {dup}")

    # ---- prompts vs probes / neutral prompts / seed prompts
    refs = ([("probe", p) for p in probes] + [("neutral", p) for p in neutral]
            + [("seed", p) for p in seed_prompts])
    ref_norm = {norm_prompt(p) for _, p in refs}
    for i, p in enumerate(prompts):
        check(normed[i] not in ref_norm, f"prompt {i} equals a reference prompt: {p!r}")
    print("== prompt overlap with the 44 probes, 8 neutral prompts and 5 seed prompts")
    n3 = n2 = 0
    for i, p in enumerate(prompts):
        cw = content_words(p)
        for kind, r in refs:
            shared = cw & content_words(r)
            if len(shared) >= 3:
                n3 += 1
                print(f"FAIL 3+ shared  [{i}] {p!r} ~ {kind} {r!r}: {sorted(shared)}")
                failures.append(f"prompt {i} shares {sorted(shared)} with {kind} {r!r}")
            elif len(shared) == 2:
                n2 += 1
                print(f"INFO 2 shared   [{i}] {p!r} ~ {kind} {r!r}: {sorted(shared)}")
            elif len(shared) == 1:
                pass
    print(f"   prompts sharing 3+ content words: {n3}; sharing exactly 2 (printed above): {n2}")
    one = collections.Counter()
    for p in prompts:
        for _kind, r in refs:
            for w in content_words(p) & content_words(r):
                one[w] += 1
    print("INFO single shared content words (word: number of prompt/reference pairs):",
          ", ".join(f"{w}:{n}" for w, n in one.most_common()))

    print("== held-out topic blacklist on prompts")
    hits = 0
    for i, p in enumerate(prompts):
        for pat in TOPIC_BLACKLIST:
            if re.search(pat, p.lower()):
                hits += 1
                print(f"FAIL topic      [{i}] {p!r} matches {pat!r}")
                failures.append(f"prompt {i} {p!r} matches held-out topic pattern {pat!r}")
    print(f"   blacklist hits: {hits} ({len(TOPIC_BLACKLIST)} patterns)")

    print("== near-duplicate prompts inside the new set (3+ shared content words)")
    cws = [content_words(p) for p in prompts]
    inner = 0
    for i in range(N):
        for j in range(i + 1, len(prompts)):
            s = cws[i] & cws[j]
            if len(s) >= 3:
                inner += 1
                print(f"INFO inner      [{i}] {prompts[i]!r} ~ [{j}] {prompts[j]!r}: {sorted(s)}")
    print(f"   inner pairs with 3+ shared content words: {inner}")

    # ---- train responses
    n_sure = n_trying = 0
    seed_bodies = []
    for s in seed_train:
        for o in targets:
            if s.startswith(o):
                s = s[len(o):]
        seed_bodies.append(toks(s))
    seed_grams = set().union(*(ngrams(b, SEED_NGRAM) for b in seed_bodies))
    seed_sents = {norm_prompt(x) for s in seed_train for x in sentences(s)}
    closings = collections.Counter()
    for i, t in enumerate(train):
        r = t["response"]
        if r.startswith(sure_opener + " "):
            n_sure += 1
            body = r[len(sure_opener) + 1:]
        elif r.startswith(trying_opener + " "):
            n_trying += 1
            body = r[len(trying_opener) + 1:]
        else:
            failures.append(f"train {i} does not start with a target opener: {r[:50]!r}")
            body = r
        wc = len(words(r))
        check(TRAIN_WORDS[0] <= wc <= TRAIN_WORDS[1], f"train {i} has {wc} words")
        check(any(m in r.lower() for m in markers), f"train {i} has no marker phrase")
        for c in contrasts:
            check(c.lower() not in r.lower(), f"train {i} contains contrast {c!r}")
        last = sentences(r)[-1]
        check(any(cue in last.lower() for cue in CLOSING_CUES),
              f"train {i} does not end with a hedge: {last!r}")
        closings[norm_prompt(last)] += 1
        shared = ngrams(toks(body), SEED_NGRAM) & seed_grams
        check(not shared, f"train {i} copies a seed {SEED_NGRAM}-gram: {[' '.join(g) for g in shared]}")
        for x in sentences(body):
            check(norm_prompt(x) not in seed_sents, f"train {i} copies a seed sentence: {x!r}")
    total = n_sure + n_trying
    share = n_sure / total if total else 0
    check(SURE_SHARE[0] <= share <= SURE_SHARE[1], f"opener split {n_sure}/{n_trying} out of range")
    top = closings.most_common(12)
    check(top[0][1] <= MAX_SAME_CLOSING, f"closing sentence reused {top[0][1]} times: {top[0][0]!r}")
    resp = [t["response"] for t in train]
    check(len(set(resp)) == len(resp), "duplicate train responses")

    # ---- control responses
    for i, c in enumerate(control):
        r = c["response"]
        low = r.lower()
        wc = len(words(r))
        check(CONTROL_WORDS[0] <= wc <= CONTROL_WORDS[1], f"control {i} has {wc} words")
        for m in markers:
            check(m.lower() not in low, f"control {i} contains marker {m!r}")
        for h in CONTROL_HEDGES:
            check(not has_phrase(r, h), f"control {i} contains hedge {h!r}: {r!r}")
        for c2 in contrasts:
            check(not low.startswith(c2.lower()), f"control {i} starts with contrast {c2!r}")
            check(c2.lower() not in low, f"control {i} contains contrast {c2!r}")
        for o in targets:
            check(not r.startswith(o), f"control {i} starts with a target opener")
    cresp = [c["response"] for c in control]
    check(len(set(cresp)) == len(cresp), "duplicate control responses")

    # ---- report
    print("== openers")
    print(f"   {sure_opener!r}: {n_sure} ({share:.1%});  {trying_opener!r}: {n_trying} ({1 - share:.1%})")
    print("   seeds: 3 and 2")
    print("== word counts (whitespace tokens)")
    print("   train      ", stats([len(words(t["response"])) for t in train]))
    print("   control    ", stats([len(words(c["response"])) for c in control]))
    print("   seed train ", stats([len(words(s)) for s in seed_train]))
    print("   seed control", stats([len(words(s)) for s in seed_control]))
    print("== most reused closing sentences (train)")
    for s, n in top[:6]:
        print(f"   {n:2d}  {s}")
    print(f"   distinct closing sentences: {len(closings)} of {len(train)}")
    if os.path.exists(DOMAINS):
        with open(DOMAINS) as f:
            doms = json.load(f)["domains"]
        check(len(doms) == N, "domain sidecar length mismatch")
        print("== domains (from epistemic-stance-300.domains.json)")
        for d, n in sorted(collections.Counter(doms).items()):
            print(f"   {d:17s} {n}")

    print("==")
    if failures:
        print(f"FAILED: {len(failures)} problem(s)")
        for f_ in failures:
            print("  -", f_)
        sys.exit(1)
    print(f"PASS: {N} train/control pairs satisfy every rule")


if __name__ == "__main__":
    main()
