#!/usr/bin/env bash
# bench/report.sh on the results files of real short runs (bench/charts/samples/, each
# written by a runner's --out): every file gives its table and SVG charts, every SVG is
# well-formed and carries its run's date and machine, every benchmark that corio and a
# peer both ran is named in a chart with the ratio the medians give, a scaling run's CPU
# costs per request are kept off its speed-scaling chart (drawn apart, ideal 1), and bad
# input (no file, no result lines) is refused with a message.
#   report_check.sh SOURCE_ROOT
set -euo pipefail
root=$1
report=$root/bench/report.sh
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() {
  echo "FAIL: $*" >&2
  exit 1
}

samples=("$root"/bench/charts/samples/*.txt)
[ -f "${samples[0]}" ] || fail "no sample results in bench/charts/samples"
for results in "${samples[@]}"; do
  stem=$(basename "$results" .txt)
  out=$work/$stem
  bash "$report" "$results" "$out" >"$work/$stem.log" || fail "report.sh $stem exited $?: $(cat "$work/$stem.log")"
  [ -s "$out/$stem.md" ] || fail "$stem: no table $stem.md"
  # The checks in Python: XML, caption, benchmark names and ratios, from the results file
  # itself (medians of every line, corio against each peer with the same unit).
  python3 - "$results" "$out" "$stem" <<'PY' || fail "$stem: see above"
import collections, glob, os, re, statistics, sys
import xml.etree.ElementTree as ET

results, out, stem = sys.argv[1:4]
header, vals, units = {}, collections.defaultdict(list), {}
for line in open(results, encoding="utf-8"):
    if line.startswith("#"):
        m = re.match(r"#\s*([a-z]+):\s*(.*)", line.strip())
        if m:
            header.setdefault(m.group(1), m.group(2))
        continue
    p = line.split()
    if len(p) >= 4:
        vals[(p[0], p[1])].append(float(p[2]))
        units[(p[0], p[1])] = p[3]
assert "date" in header and "machine" in header, f"{stem}: the sample has no date or machine header"
svgs = sorted(glob.glob(os.path.join(out, "*.svg")))
assert svgs, f"{stem}: no SVG written"
texts = {}
for svg in svgs:
    ET.parse(svg)  # well-formed, or raises
    text = open(svg, encoding="utf-8").read()
    assert header["date"] in text, f"{os.path.basename(svg)}: the run's date is not in it"
    assert header["machine"].split(",")[0] in text, f"{os.path.basename(svg)}: the machine is not in it"
    texts[svg] = text
all_text = "\n".join(texts.values())
med = {k: statistics.median(v) for k, v in vals.items()}
checked = 0
for bench in sorted({b for b, _ in med}):
    corio = [s for (b, s) in med if b == bench and s.startswith("corio")]
    peers = [s for (b, s) in med if b == bench and not s.startswith("corio")]
    if not corio or not peers:
        continue
    assert f">{bench}<" in all_text or f">{bench} (" in all_text, f"{stem}: benchmark {bench} is in no chart"
    checked += 1
    # The ratio of the peer run with the same worker count (or the default corio run).
    for peer in peers:
        suffix = peer.partition("-")[2]
        c = ("corio-" + suffix) if suffix and (bench, "corio-" + suffix) in med else \
            ("corio" if (bench, "corio") in med else "corio-1w")
        if (bench, c) not in med or units[(bench, c)] != units[(bench, peer)]:
            continue
        unit = units[(bench, peer)]
        r = med[(bench, c)] / med[(bench, peer)] if unit.endswith("/s") else med[(bench, peer)] / med[(bench, c)]
        paired = bool(suffix) and c == "corio-" + suffix
        family = peer.partition("-")[0] if paired else peer
        svg = os.path.join(out, f"{stem}-vs-{family}.svg")
        assert svg in texts, f"{stem}: no chart {os.path.basename(svg)} for {bench}/{peer}"
        assert f">{r:.2f}x<" in texts[svg], f"{stem}: {os.path.basename(svg)} lacks {bench}'s ratio {r:.2f}x"
assert checked > 0, f"{stem}: no benchmark with corio and a peer"
if header.get("kind") == "scaling":
    # Each series with a 1-worker figure is drawn in one chart: a speed against the ideal N
    # (-scaling.svg), a CPU cost per unit of work (*_cpu) apart against the ideal 1
    # (-cpu-scaling.svg): its 1/N-style ratio under "speed at N workers" was wrong.
    series = collections.defaultdict(set)
    for (b, s) in med:
        m = re.match(r"^(.*)-(\d+)w$", s)
        if m:
            series[(b, m.group(1))].add(int(m.group(2)))
    charts = {k: texts.get(os.path.join(out, f"{stem}-{k}.svg"), "") for k in ("scaling", "cpu-scaling")}
    assert charts["scaling"], f"{stem}: no scaling chart"
    costs = 0
    for (b, fam), ns in sorted(series.items()):
        if 1 not in ns or len(ns) < 2:
            continue
        cost = re.search(r"(^|_)cpu($|_)", b) is not None
        costs += cost
        want, other = ("cpu-scaling", "scaling") if cost else ("scaling", "cpu-scaling")
        assert f">{b} {fam}<" in charts[want], f"{stem}: {b} {fam} is not in the {want} chart"
        assert f">{b} {fam}<" not in charts[other], f"{stem}: {b} {fam} is in the {other} chart"
    assert costs > 0, f"{stem}: the scaling sample has no CPU cost series to check"
print(f"{stem}: {len(svgs)} charts, {checked} benchmarks named with their ratios")
PY
done

# Bad input: a missing file, and a file without result lines, are refused with a message.
if bash "$report" "$work/missing.txt" "$work/bad" 2>"$work/err"; then
  fail "report.sh accepted a missing results file"
fi
grep -q "no results file" "$work/err" || fail "missing file: unclear message: $(cat "$work/err")"
printf '# kind: side-by-side\n# date: x\nnot a result line\n' >"$work/empty.txt"
if bash "$report" "$work/empty.txt" "$work/bad" 2>"$work/err"; then
  fail "report.sh accepted a results file without result lines"
fi
grep -q "no .*lines" "$work/err" || fail "empty file: unclear message: $(cat "$work/err")"
echo "report.sh: ${#samples[@]} sample runs charted"
