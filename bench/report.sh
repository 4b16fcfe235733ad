#!/usr/bin/env bash
# Turns one benchmark run's results file into SVG charts and a Markdown table, with the
# run's date and machine in every title. A results file comes from a runner's `--out FILE`
# (bench/run.sh, bench/ipc/echo.sh, bench/process/run.sh, bench/scale.sh): `# key: value`
# header lines (bench/results.sh), then `<benchmark> <system> <value> <unit>` lines; the
# median of each (benchmark, system) is used.
#
#   bash bench/report.sh RESULTS_FILE [OUT_DIR, default: the results file's folder]
#
# Writes, named after the results file (STEM = its name without the extension):
#   STEM-vs-PEER.svg  one chart per peer: for each benchmark both ran, corio's speed over the
#                     peer's (peer time / corio time, or corio rate / peer rate; above 1:
#                     corio is faster). A peer run with N workers is compared with corio run
#                     with N workers ("tokio-1w" with "corio-1w"; labels say "(1w)").
#   STEM-scaling.svg  (scaling runs: `# kind: scaling`, from bench/scale.sh) each system's speed at N workers over
#                     its own speed at 1 worker, per benchmark, against the worker count (ideal: N).
#   STEM-cpu-scaling.svg  (scaling runs) the CPU costs per unit of work (benchmarks named *_cpu,
#                     e.g. server CPU µs per request) at N workers over at 1 worker (ideal: 1,
#                     flat; they are not speeds and stay off the chart above).
#   STEM.md           the medians as a table, and the ratios.
# Prints the paths it wrote. Needs gnuplot (Debian: gnuplot-nox, from .ci/deps.sh) and python3.
set -euo pipefail
if [ $# -lt 1 ] || [ $# -gt 2 ] || [ "$1" = --help ]; then
  sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
  [ "${1:-}" = --help ] && exit 0
  exit 2
fi
results=$1
out_dir=${2:-$(dirname "$results")}
if [ ! -f "$results" ]; then
  echo "report.sh: no results file $results" >&2
  exit 2
fi
if ! command -v gnuplot >/dev/null; then
  echo "report.sh: gnuplot is missing (Debian: apt-get install gnuplot-nox, or bash .ci/deps.sh)" >&2
  exit 1
fi
mkdir -p "$out_dir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Python reads the results and writes the data files, the gnuplot scripts (one per chart,
# listed in $work/charts) and the table; gnuplot draws.
python3 - "$results" "$out_dir" "$work" <<'PY'
import collections, math, os, re, statistics, sys

results, out_dir, work = sys.argv[1:4]
stem = os.path.splitext(os.path.basename(results))[0]
header = {}
values = collections.defaultdict(list)
units = {}
for line in open(results, encoding="utf-8"):
    line = line.strip()
    if line.startswith("#"):
        m = re.match(r"#\s*([a-z]+):\s*(.*)", line)
        if m and m.group(1) not in header:
            header[m.group(1)] = m.group(2)
        continue
    parts = line.split()
    if len(parts) < 4:
        continue
    try:
        v = float(parts[2])
    except ValueError:
        continue
    if not math.isfinite(v) or v <= 0:
        continue
    values[(parts[0], parts[1])].append(v)
    units[(parts[0], parts[1])] = parts[3]
if not values:
    sys.exit(f"report.sh: no `<benchmark> <system> <value> <unit>` lines in {results}")
med = {k: statistics.median(v) for k, v in values.items()}

def higher_is_better(unit):
    if unit.endswith("/s"):
        return True
    if re.match(r"^(ns|us|µs|ms|s)(/|$)", unit):
        return False
    return None  # unknown: neither charted nor compared

caption = "{}; {}".format(header.get("date", "date unknown"), header.get("machine", "machine unknown"))
load = header.get("load")
if load:
    caption += "; load " + load.split(" (")[0]
command = header.get("command", "")

def gp_quote(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

charts = []

def ytics(lo, hi):
    """Tick marks at 1, 2, 5 times the powers of ten between lo and hi."""
    marks = []
    for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        for m in (1, 2, 5):
            t = m * 10 ** e
            if lo <= t <= hi:
                marks.append(f'"{t:g}" {t:g}')
    return ", ".join(marks)

# ---- corio against each peer ---------------------------------------------------------
def corio_for(bench, system):
    """The corio system a peer's figure is compared with, and the suffix naming the pairing."""
    base, _, suffix = system.partition("-")
    if suffix and (bench, "corio-" + suffix) in med:
        return "corio-" + suffix, base, suffix
    for c in ("corio", "corio-1w"):
        if (bench, c) in med:
            return c, system, ""
    return None, system, ""

pairs = collections.defaultdict(list)  # peer family -> [(label, ratio, corio value, peer value, unit)]
for (bench, system), v in sorted(med.items()):
    if system.startswith("corio"):
        continue
    unit = units[(bench, system)]
    hib = higher_is_better(unit)
    c_sys, family, suffix = corio_for(bench, system)
    if c_sys is None or hib is None or units[(bench, c_sys)] != unit:
        continue
    c = med[(bench, c_sys)]
    ratio = c / v if hib else v / c
    label = bench + (f" ({suffix})" if suffix else "")
    pairs[family].append((label, ratio, c, v, unit))

for family, rows in sorted(pairs.items()):
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", family)
    dat = f"vs-{name}.dat"
    with open(os.path.join(work, dat), "w", encoding="utf-8") as f:
        for label, ratio, *_ in rows:
            color = "0x2e8b57" if ratio >= 1 else "0xc0392b"
            f.write(f"{label}\t{ratio:.6g}\t{ratio:.2f}x\t{int(color, 16)}\n")
    lo = min(min(r[1] for r in rows), 1.0) / 1.6
    hi = max(max(r[1] for r in rows), 1.0) * 1.6
    svg = os.path.abspath(os.path.join(out_dir, f"{stem}-vs-{name}.svg"))
    width = max(640, 90 * len(rows) + 200)
    gp = os.path.join(work, f"vs-{name}.gp")
    with open(gp, "w", encoding="utf-8") as f:
        f.write(f"""set terminal svg size {width},520 dynamic noenhanced font "sans,12" background rgb "white"
set output {gp_quote(svg)}
set datafile separator "\\t"
set title {gp_quote(f"corio vs {family}: corio's speed / {family}'s (above 1: corio faster)")} . "\\n" . {gp_quote(caption)}
set logscale y 10
set yrange [{lo:.6g}:{hi:.6g}]
set ylabel "speed ratio (log scale)"
set xrange [-0.6:{len(rows) - 0.4}]
set xtics rotate by 30 right nomirror
set ytics nomirror ({ytics(lo, hi)})
set bmargin 9
set grid ytics
set key off
set border 3
set arrow from graph 0, first 1 to graph 1, first 1 nohead lc rgb "#444444" dt 2
set style fill solid 0.85 noborder
""")
        if command:
            f.write(f"set label {gp_quote('run: ' + command)} at screen 0.01, screen 0.02 font \"sans,9\"\n")
        f.write(f"""plot {gp_quote(dat)} using 0:2:($0-0.35):($0+0.35):($2<1?$2:1):($2<1?1:$2):4:xticlabels(1) \\
       with boxxyerror lc rgb variable title "speed ratio", \\
     '' using 0:($2<1?$2/1.12:$2*1.08):3 with labels font "sans,10" title "ratio labels"
""")
    charts.append(gp)

# ---- scaling: each system against itself at 1 worker ---------------------------------
# Two kinds of series. A speed (a rate, or the time a fixed amount of work takes per
# task): at N workers over at 1 worker, against the ideal N (STEM-scaling.svg). A cost,
# the CPU time one unit of work takes (a benchmark named *_cpu, e.g. echo_64B_cpu in
# us/req): a perfect server's stays flat whatever N, so it is drawn apart, at N over at
# 1 (above 1: dearer per request), against the ideal 1 (STEM-cpu-scaling.svg).
scaling = collections.defaultdict(dict)  # (bench, system family) -> {workers: value}
for (bench, system), v in med.items():
    m = re.match(r"^(.*)-(\d+)w$", system)
    if m:
        scaling[(bench, m.group(1))][int(m.group(2))] = v
is_scaling = header.get("kind") == "scaling"
scaled = {k: s for k, s in scaling.items() if 1 in s and len(s) > 1} if is_scaling else {}

def is_cost(bench):
    """A CPU cost per unit of work (server CPU µs per request, ...), not a speed."""
    return re.search(r"(^|_)cpu($|_)", bench) is not None

def scaling_chart(kind, series, title, ideal, ylabel):
    """One chart of series [(bench, family, {workers: ratio})] against the ideal line."""
    svg = os.path.abspath(os.path.join(out_dir, f"{stem}-{kind}.svg"))
    top = max(max(r) for _, _, r in series)
    benches = sorted({b for b, _, _ in series})
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
               "#7f7f7f", "#bcbd22"]
    gp = os.path.join(work, f"{kind}.gp")
    with open(gp, "w", encoding="utf-8") as f:
        f.write(f"""set terminal svg size 900,560 dynamic noenhanced font "sans,12" background rgb "white"
set output {gp_quote(svg)}
set datafile separator "\\t"
set title {gp_quote(title + " (solid: corio, dashed: peers; grey: ideal)")} . "\\n" . {gp_quote(caption)}
set logscale x 2
set logscale y 2
set xrange [0.9:{top * 1.1:.6g}]
set xlabel "workers"
set ylabel {gp_quote(ylabel)}
set grid
set key outside right top
set bmargin 5
""")
        if command:
            f.write(f"set label {gp_quote('run: ' + command)} at screen 0.01, screen 0.02 font \"sans,9\"\n")
        parts = [f"{ideal} with lines lc rgb \"#bbbbbb\" dt 3 title \"ideal\""]
        for i, (bench, family, ratios) in enumerate(series):
            dat = f"{kind}-{i}.dat"
            with open(os.path.join(work, dat), "w", encoding="utf-8") as d:
                for n in sorted(ratios):
                    d.write(f"{n}\t{ratios[n]:.6g}\n")
            color = palette[benches.index(bench) % len(palette)]
            dash = 1 if family == "corio" else 2
            parts.append(f"{gp_quote(dat)} using 1:2 with linespoints lc rgb \"{color}\" dt {dash} lw 1.5 "
                         f"pt {6 if dash == 1 else 4} "
                         f"title {gp_quote(bench + ' ' + family)}")
        f.write("plot " + ", \\\n     ".join(parts) + "\n")
    charts.append(gp)

speeds, costs = [], []
for (bench, family), s in sorted(scaled.items()):
    hib = higher_is_better(units[(bench, f"{family}-1w")])
    if hib is None:
        continue
    if is_cost(bench):
        costs.append((bench, family, {n: s[n] / s[1] for n in s}))
    else:
        speeds.append((bench, family, {n: s[n] / s[1] if hib else s[1] / s[n] for n in s}))
if speeds:
    scaling_chart("scaling", speeds, "speed at N workers / speed at 1 worker", "x", "relative speed (log scale)")
if costs:
    scaling_chart("cpu-scaling", costs, "CPU per unit of work at N workers / at 1 worker (above 1: dearer)",
                  "1", "relative CPU cost (log scale)")

# ---- the table ----------------------------------------------------------------------
md = os.path.join(out_dir, f"{stem}.md")
with open(md, "w", encoding="utf-8") as f:
    f.write(f"Run: `{command}`, {caption}.\n\n")
    systems = sorted({s for _, s in med}, key=lambda s: (not s.startswith("corio"), s))
    if scaled:
        counts = sorted({n for s in scaled.values() for n in s})
        f.write("| benchmark | system | unit | " + " | ".join(f"{n}w" for n in counts) + " |\n")
        f.write("|---|---|---|" + "---|" * len(counts) + "\n")
        for (bench, family), s in sorted(scaled.items()):
            cells = [f"{s[n]:,.1f}" if n in s else "—" for n in counts]
            f.write(f"| {bench} | {family} | {units[(bench, family + '-1w')]} | " + " | ".join(cells) + " |\n")
    else:
        f.write("| benchmark | system | median | unit | runs |\n|---|---|---|---|---|\n")
        for (bench, system), v in sorted(med.items(), key=lambda kv: (kv[0][0], systems.index(kv[0][1]))):
            f.write(f"| {bench} | {system} | {v:,.1f} | {units[(bench, system)]} | {len(values[(bench, system)])} |\n")
    if pairs:
        f.write("\ncorio's speed over each peer's (above 1: corio faster):\n\n")
        f.write("| peer | benchmark | corio | peer | unit | ratio |\n|---|---|---|---|---|---|\n")
        for family, rows in sorted(pairs.items()):
            for label, ratio, c, v, unit in rows:
                f.write(f"| {family} | {label} | {c:,.1f} | {v:,.1f} | {unit} | {ratio:.2f}× |\n")

with open(os.path.join(work, "charts"), "w", encoding="utf-8") as f:
    f.write("\n".join(charts) + ("\n" if charts else ""))
print(md)
PY

while read -r gp; do
  [ -n "$gp" ] || continue
  (cd "$work" && gnuplot "$gp")  # data files are named relative to $work
  sed -n 's/^set output "\(.*\)"$/\1/p' "$gp"
done <"$work/charts"
