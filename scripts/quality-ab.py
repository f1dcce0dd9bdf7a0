#!/usr/bin/env python3
"""Compare two babel-quality runs cell by cell (A/B of two builds).

usage: scripts/quality-ab.py BEFORE/results.json AFTER/results.json [BEFORE2 AFTER2 ...]

Each pair is one condition's results.json from `babel-quality --runs N` of
each build (same seeds). Prints a markdown row per condition: the means with
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


def load(path):
    row = json.load(open(path))['rows'][0]
    calls = row['babel']
    return row['label'], [c['mos'] for c in calls], [c['delay_ms'] for c in calls], [c['concealed'] for c in calls]


def mean_var(x):
    m = sum(x) / len(x)
    return m, sum((v - m) ** 2 for v in x) / (len(x) - 1)


def main(args):
    if len(args) < 2 or len(args) % 2:
        sys.exit(__doc__)
    print("| network | calls each | before | after | difference | Welch 95 % interval of the difference | delay before / after | concealed per call before / after |")
    print("| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |")
    for before, after in zip(args[::2], args[1::2]):
        label, a, ad, ac = load(before)
        _, b, bd, bc = load(after)
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
