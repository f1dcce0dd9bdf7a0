#!/usr/bin/env python3
"""Compare two babel-quality runs cell by cell (A/B of two builds).

usage: scripts/quality-ab.py BEFORE/results.json AFTER/results.json [BEFORE2 AFTER2 ...]
       scripts/quality-ab.py BEFORE/sim-voices.json AFTER/sim-voices.json   (or sim-results.json)

Each pair is one condition's results.json from `babel-quality --runs N` of
each build (same seeds), or the sim-voices.json (sim-results.json) of two
`babel-quality --simulated [--real-voices]` runs: every voice and
condition they share, a row each. Prints a markdown row per condition: the means with
their 95 % intervals (Student's t), the difference and Welch's 95 % interval
of it, the mean alignment delay and concealed frames per call. Standard
library only (no scipy): the t quantile is the Cornish-Fisher expansion,
good to about 1e-3 for 10 or more degrees of freedom.
"""
import json
import math
import sys


def t975(df):
    z = 1.959963984540054
    return (z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3))


def cells(row):
    calls = row['babel']
    return [c['mos'] for c in calls], [c['delay_ms'] for c in calls], [c['concealed'] for c in calls]


def load(path):
    """(label, cell) of each row: one for a results.json, one per voice and
    condition for a sim-voices.json."""
    doc = json.load(open(path))
    if isinstance(doc, list):
        return [(f"{v['voice']}, {row['label']}", cells(row)) for v in doc for row in v['run']['report']['rows']]
    rows = doc['report']['rows'] if 'report' in doc else doc['rows'][:1]
    return [(row['label'], cells(row)) for row in rows]


def mean_var(x):
    m = sum(x) / len(x)
    return m, sum((v - m) ** 2 for v in x) / (len(x) - 1)


def main(args):
    if len(args) < 2 or len(args) % 2:
        sys.exit(__doc__)
    print("| network | calls each | before | after | difference | Welch 95 % interval of the difference | delay before / after | concealed per call before / after |")
    print("| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |")
    pairs = []
    for before, after in zip(args[::2], args[1::2]):
        after_cells = dict(load(after))
        pairs += [(label, cell, after_cells[label]) for label, cell in load(before) if label in after_cells]
    for label, (a, ad, ac), (b, bd, bc) in pairs:
        (ma, va), (mb, vb) = mean_var(a), mean_var(b)
        ea, eb = va / len(a), vb / len(b)
        df = (ea + eb) ** 2 / (ea**2 / (len(a) - 1) + eb**2 / (len(b) - 1)) if ea + eb > 0 else 1e9
        h = t975(df) * math.sqrt(ea + eb)
        d = mb - ma
        verdict = "no difference" if abs(d) <= h else "differs"
        print(f"| {label} | {len(a)}/{len(b)} | {ma:.2f} ± {t975(len(a) - 1) * math.sqrt(ea):.2f} "
              f"| {mb:.2f} ± {t975(len(b) - 1) * math.sqrt(eb):.2f} | {d:+.2f} | {d - h:+.2f} … {d + h:+.2f}: {verdict} "
              f"| {sum(ad) / len(ad):.0f} / {sum(bd) / len(bd):.0f} ms | {sum(ac) / len(ac):.1f} / {sum(bc) / len(bc):.1f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
