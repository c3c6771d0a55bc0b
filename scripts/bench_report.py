#!/usr/bin/env python3
"""Turns one scripts/bench.sh run into docs/bench/results.md and chart.png.

    bench_report.py META_JSON RUNS_JSONL OUT_DIR

Also writes OUT_DIR/raw/<run>.json: the metadata, every run and the summary
statistics together. Medians are taken over every repetition (none dropped).
Can be rerun on an old run's raw files to redo the report.
"""

import json
import os
import statistics
import sys

MiB = 1 << 20

OPS = [
    ("create_best_speed", "create best_speed"),
    ("create_none", "create none"),
    ("restore", "restore (truncate, empty dir)"),
    ("restore_one", "restore one file (1-4 MB, deep in the archive)"),
    ("second_unchanged", "second backup, unchanged tree"),
    ("second_changed", "second backup, 2% of files changed"),
]
# (op, tool) -> label, in table order.
LABELS = {
    ("create_best_speed", "ours"): "**ours** (wings-backup)",
    ("create_best_speed", "wings-replica"): "wings-replica",
    ("create_best_speed", "pigz"): "`tar -cf - . | pigz -1`",
    ("create_best_speed", "gnu-tar-gz"): "`tar -czf` (gzip -6)",
    ("create_best_speed", "ours-progress"): "ours, with a progress callback",
    ("create_best_speed", "ours-pure"): "ours, pure-Rust build (zlib-rs, no ISA-L)",
    ("create_none", "ours"): "**ours** (wings-backup)",
    ("create_none", "gnu-tar"): "`tar -cf FILE .`",
    ("create_none", "walk-pipe"): "`tar -cf - . | cat >/dev/null` (floor)",
    ("create_none", "walk-null"): "`tar -cf - . >/dev/null` (reads no data)",
    ("restore", "ours"): "**ours** (its own archive)",
    ("restore", "wings-replica"): "wings-replica (its own archive)",
    ("restore", "gnu-tar-gz"): "`tar -xzf` (its own archive)",
    ("restore", "ours-wr"): "ours, on wings-replica's archive",
    ("restore", "ours-pure"): "ours, pure-Rust build (its own archive)",
    ("restore_one", "ours"): "**ours** (`--path`, through the index)",
    ("restore_one", "gnu-tar-gz"): "`tar -xzf ARCHIVE PATH` (its own archive)",
    ("restore_one", "wings-replica"): "wings-replica (restores the whole archive)",
    ("second_unchanged", "ours"): "**ours**, reusing the first backup",
    ("second_unchanged", "wings-replica"): "wings-replica",
    ("second_changed", "ours"): "**ours**, reusing the first backup",
    ("second_changed", "wings-replica"): "wings-replica",
    ("second_changed", "ours-fresh"): "ours, without reuse",
}
SHORT = {
    "ours": "ours", "wings-replica": "wings-replica", "pigz": "tar|pigz -1",
    "gnu-tar-gz": "tar -z", "gnu-tar": "tar -cf", "walk-pipe": "walk|cat",
    "walk-null": "walk>/dev/null", "ours-wr": "ours on wr archive",
    "ours-progress": "ours + progress", "ours-pure": "ours pure-Rust",
    "ours-fresh": "ours, no reuse",
}
CORPUS_NAMES = {
    "a": "(a) Rust sysroot",
    "b": "(b) generated game-server tree",
    "b4": "(b×4) generated game-server tree, 4× files and bytes",
}



def free_page_reporting():
    """Whether this machine is a VM whose virtio balloon reports free pages
    to the host (feature bit 5, VIRTIO_BALLOON_F_REPORTING)."""
    base = "/sys/bus/virtio/devices"
    try:
        devices = os.listdir(base)
    except OSError:
        return False
    for d in devices:
        try:
            with open(os.path.join(base, d, "device")) as f:
                if int(f.read().strip(), 16) != 5:  # 5: balloon
                    continue
            with open(os.path.join(base, d, "features")) as f:
                bits = f.read().strip()
        except (OSError, ValueError):
            continue
        if len(bits) > 5 and bits[5] == "1":
            return True
    return False

def load(meta_path, runs_path):
    with open(meta_path) as f:
        meta = json.load(f)
    with open(runs_path) as f:
        runs = [json.loads(line) for line in f if line.strip()]
    return meta, runs


def summarize(runs):
    groups = {}
    for r in runs:
        groups.setdefault((r["corpus"], r["op"], r["tool"]), []).append(r)
    stats = {}
    for key, rs in groups.items():
        walls = [r["wall_s"] for r in rs]
        cpus = [r["user_s"] + r["sys_s"] for r in rs]
        rss = [r["max_rss_kb"] / 1024 for r in rs]
        sizes = [r["size"] for r in rs if r["size"] is not None]
        stats[key] = {
            "n": len(rs),
            "wall": statistics.median(walls),
            "wall_min": min(walls),
            "wall_max": max(walls),
            "cpu": statistics.median(cpus),
            "rss": statistics.median(rss),
            "rss_max": max(rss),
            "size": statistics.median(sizes) if sizes else None,
        }
    return stats


def fmt_s(x):
    return f"{x:.2f}" if x < 100 else f"{x:.1f}"


def cell(text):
    """A Markdown table cell: a `|`, even inside backticks, would end the cell."""
    return text.replace("|", "\\|")


def fmt_ratio(x):
    return f"{x:.2f}×"


def corpus_table(lines, meta, stats, corpus):
    info = meta["corpora"][corpus]
    nbytes = info["bytes"]
    many = info["reps"] > 1
    interleaved = info.get("order") == "interleaved"
    lines.append(f"### {CORPUS_NAMES[corpus]}")
    lines.append("")
    lines.append(f"{info['files']:,} files, {info['dirs']:,} directories, "
                 f"{nbytes / 1e6:,.0f} MB of file data; "
                 f"{info['reps']} repetition{'s' if many else ''}"
                 f"{', interleaved' if interleaved else ', tool by tool'}.")
    lines.append("")
    head = ["Operation", "Tool", "median wall s" if many else "wall s"]
    if many:
        head.append("min–max s")
    head += ["MB/s", "CPU s", "peak RSS MiB", "archive MiB",
             "time ratio (this ÷ ours)", "size ratio (ours ÷ this)"]
    if corpus == "b4":
        head += ["wall ÷ b", "CPU ÷ b"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join(["---"] * 2 + ["--:"] * (len(head) - 2)) + "|")
    notes = []
    for op, op_label in OPS:
        ours = stats.get((corpus, op, "ours"))
        for (lop, tool), label in LABELS.items():
            if lop != op or (corpus, op, tool) not in stats:
                continue
            s = stats[(corpus, op, tool)]
            row = [op_label, cell(label), fmt_s(s["wall"])]
            if many:
                row.append(f"{fmt_s(s['wall_min'])}–{fmt_s(s['wall_max'])}")
            row += [f"{nbytes / 1e6 / s['wall']:,.0f}", fmt_s(s["cpu"]), f"{s['rss']:.1f}",
                    f"{s['size'] / MiB:,.1f}" if s["size"] is not None else "—"]
            if tool == "ours" or ours is None:
                row.append("—")
            elif tool == "ours-wr":
                wr = stats.get((corpus, op, "wings-replica"))
                row.append(f"{fmt_ratio(wr['wall'] / s['wall'])} †" if wr else "—")
                notes.append("† For ours on wings-replica's archive, the time ratio is "
                             "wings-replica's own restore time ÷ this row's time. Its archive is "
                             "a single gzip member, which only one thread can inflate.")
            else:
                row.append(fmt_ratio(s["wall"] / ours["wall"]))
            if (tool not in ("ours", "ours-wr", "ours-progress") and ours is not None
                    and ours["size"] and s["size"]):
                row.append(f"{ours['size'] / s['size']:.3f}")
            else:
                row.append("—")
            if corpus == "b4":
                b = stats.get(("b", op, tool))
                row += ([f"{s['wall'] / b['wall']:.2f}", f"{s['cpu'] / b['cpu']:.2f}"] if b
                        else ["—", "—"])
            lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    for n in dict.fromkeys(notes):
        lines.append(n)
        lines.append("")


def verdict(measured, ok):
    return "n/a" if measured is None else "PASS" if ok else "FAIL"


def goals(stats, tool="ours"):
    """(goal, measured, threshold, passed); None measured = not measured.

    `tool` is the build whose figures are set against the anchors: "ours" (the
    default build; the goals are its) or "ours-pure" (the pure-Rust build,
    measured for create best_speed and restore only, so the create none goals
    are left out for it)."""
    out = []

    def wall(c, op, tool):
        s = stats.get((c, op, tool))
        return s["wall"] if s else None

    def ratio_goal(text, c, op, anchor_op, anchor, minimum):
        if tool != "ours" and op in ("create_none", "restore_one"):
            return
        a, o = wall(c, anchor_op, anchor), wall(c, op, tool)
        value = a / o if a and o else None
        out.append((text, None if value is None else f"{value:.2f}×", f"≥ {minimum}×",
                    value is not None and value >= minimum))

    def rss_goal(text, c, op):
        s = stats.get((c, op, tool))
        value = s["rss_max"] if s else None
        out.append((text, None if value is None else f"{value:.1f} MiB (highest run)",
                    "≤ 64 MiB", value is not None and value <= 64))

    cb, cn, r = "create_best_speed", "create_none", "restore"
    ratio_goal("(a) create best_speed throughput vs wings-replica", "a", cb, cb,
               "wings-replica", 2.5)
    so = stats.get(("a", cb, tool))
    sw = stats.get(("a", cb, "wings-replica"))
    value = so["size"] / sw["size"] if so and sw and so["size"] and sw["size"] else None
    out.append(("(a) create best_speed archive size vs wings-replica",
                None if value is None else f"{value:.3f}", "≤ 1.02", value is not None
                and value <= 1.02))
    rss_goal("(a) create best_speed peak RSS", "a", cb)
    ratio_goal("(a) create none throughput vs the raw walk (`tar -cf - | cat`)", "a", cn, cn,
               "walk-pipe", 0.8)
    ratio_goal("(a) restore throughput vs GNU `tar -xzf`", "a", r, r, "gnu-tar-gz", 1.5)
    ratio_goal("(a) restore throughput vs wings-replica", "a", r, r, "wings-replica", 1.5)
    rss_goal("(a) restore peak RSS", "a", r)
    ratio_goal("(b) create best_speed not slower than wings-replica", "b", cb, cb,
               "wings-replica", 1.0)
    ratio_goal("(b) create none not slower than wings-replica's create (it has no "
               "uncompressed mode)", "b", cn, cb, "wings-replica", 1.0)
    ratio_goal("(b) restore not slower than wings-replica", "b", r, r, "wings-replica", 1.0)
    one = "restore_one"
    ratio_goal("(a) restore of one file vs `tar -xzf ARCHIVE PATH`", "a", one, one, "gnu-tar-gz", 10)
    ratio_goal("(a) restore of one file vs wings-replica (which restores the whole archive)", "a", one,
               one, "wings-replica", 10)
    su, sc = "second_unchanged", "second_changed"
    for c in ("a", "b"):
        ratio_goal(f"({c}) second backup of an unchanged tree vs wings-replica", c, su, su,
                   "wings-replica", 6.0)
        ratio_goal(f"({c}) second backup after changing 2% of the files vs wings-replica", c,
                   sc, sc, "wings-replica", 4.0)
    return out


def chart(meta, stats, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    corpora = [c for c in ("a", "b", "b4") if c in meta["corpora"]]
    fig, axes = plt.subplots(len(corpora), len(OPS), figsize=(15, 3.2 * len(corpora) + 0.8),
                             squeeze=False)
    for i, c in enumerate(corpora):
        for j, (op, op_label) in enumerate(OPS):
            ax = axes[i][j]
            tools = [t for (o, t) in LABELS if o == op and (c, op, t) in stats]
            if not tools:  # an operation this corpus does not run (b4: restore_one)
                ax.axis("off")
                continue
            ss = [stats[(c, op, t)] for t in tools]
            med = [s["wall"] for s in ss]
            err = [[s["wall"] - s["wall_min"] for s in ss], [s["wall_max"] - s["wall"] for s in ss]]
            colors = ["tab:orange" if t == "ours" else
                      "navajowhite" if t in ("ours-wr", "ours-progress", "ours-pure", "ours-fresh") else
                      "tab:blue" if t == "wings-replica" else "tab:gray" for t in tools]
            y = range(len(tools))
            ax.barh(y, med, xerr=err if meta["corpora"][c]["reps"] > 1 else None,
                    color=colors, capsize=3)
            ax.set_yticks(list(y), [SHORT[t] for t in tools])
            ax.invert_yaxis()
            right = max(s["wall_max"] for s in ss)
            for k, s in enumerate(ss):
                ax.text(s["wall_max"] + right * 0.02, k, f"{s['wall']:.2f}", va="center",
                        fontsize=8)
            ax.set_xlim(0, right * 1.2)
            ax.set_title(f"{c}: {op_label}", fontsize=10)
            if i == len(corpora) - 1:
                ax.set_xlabel("wall time, s (median; bars: min–max)")
    fig.suptitle(f"wings-backup vs anchors: median wall time, {meta['cores']} cores, "
                 f"{meta['date'][:10]}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(meta, stats, runs):
    v = meta["versions"]
    loads = [r["load1"] for r in runs]
    L = []
    L.append("# Benchmark: wings-backup against its anchors")
    L.append("")
    L.append("Written by `make bench` (`scripts/bench.sh`); do not edit by hand. "
             "Chart: [chart.png](chart.png); raw data: `docs/bench/raw/` (not committed).")
    L.append("")
    L.append(f"- Date: {meta['date']}")
    L.append(f"- Machine: {meta['cores']} cores, CPU `{meta['cpu']}`, "
             f"{meta['mem_total_kb'] / 1024 / 1024:.1f} GiB RAM, {meta['kernel']}; shared with "
             f"other work (load average at start {meta['load_start']}, at end "
             f"{meta['load_end']}; 1-minute load when each run started: median "
             f"{statistics.median(loads):.2f}, highest {max(loads):.2f}, the benchmark's own "
             "processes included)")
    L.append(f"- Work directory: `{meta['bench_dir']}` (tmpfs: sources, archives and restores "
             "are all in memory, so no disk is measured)")
    L.append("- Tools:")
    for k in ("ours", "ours-pure", "rustc", "wings-replica", "go", "tar", "pigz", "gzip", "time"):
        if k in v:  # runs before the pure-Rust build was measured lack "ours-pure"
            L.append(f"  - {k}: {v[k]}")
    L.append("")
    L.append("## Method")
    L.append("")
    L.append(
        "Every tool runs as a child process, measured the same way: wall time from bash's "
        "`EPOCHREALTIME` around the child, user + system CPU seconds and peak RSS from GNU "
        "`time` (wait4's rusage, which covers the child and every descendant it waited for; "
        "for a pipeline the peak RSS is that of its largest process). Ours is "
        "`benches/archive.rs`, one library call (`archive_create` / `archive_extract`, "
        "threads = cores) per process. On corpora a and b every operation and tool runs once "
        "per repetition, interleaved (repetition 1 of everything, then repetition 2, ...), so "
        "that load from other work on the machine falls on all tools alike; medians are over "
        "all repetitions, none dropped. Outputs are deleted between runs outside the timed "
        "region; each restore goes into a new empty directory and, in repetition 1, is checked "
        "to hold every file with its size. Each tool restores its own archive (kept from its "
        "first create); \"ours on wings-replica's archive\" is an extra row. Ours runs without a "
        "progress callback, as wings-replica reports no progress; \"ours, with a progress "
        "callback\" is the same backup with one, for which the library first totals the tree's "
        "size in a stat-only pass at the lowest priority (so that percentages mean something).")
    L.append("")
    L.append(
        "**The floor for create none.** `tar -cf - DIR > /dev/null` is not a raw walk: GNU tar "
        "notices that its archive is `/dev/null` and then does not read file contents at all "
        "(only the metadata), so its time is a walk without any data. `tar -cf - DIR | cat > "
        "/dev/null` reads every byte and writes it into a pipe; it is the floor for an "
        "uncompressed archive and the anchor of the create-none goal. `tar -cf FILE` writes "
        "the same archive to a file on tmpfs, as ours does (ours also hashes it with SHA-1).")
    L.append("")
    if free_page_reporting():
        L.append(
            "**System time on this machine.** It is a virtual machine whose balloon device "
            "reports free pages to the host (`virtio_balloon` with free page reporting): memory "
            "the guest frees, such as an archive deleted between runs, goes back to the host a "
            "few seconds later, and the next writes into it fault on the host. Runs that write "
            "while that happens take up to several times their usual system time, whatever the "
            "tool; it weighs most on the shortest runs, whose time is mostly writing. The CPU s "
            "column shows it; see docs/design.md, \"System time on this machine\".")
        L.append("")
    L.append("Time ratio = the row's median wall time ÷ ours (above 1: ours is faster, "
             "i.e. ours' throughput ÷ the tool's). Size ratio = our archive ÷ the row's archive. "
             "MB/s = the corpus' file bytes ÷ wall time.")
    L.append("")
    L.append("## Results")
    L.append("")
    for c in ("a", "b", "b4"):
        if c in meta["corpora"]:
            corpus_table(L, meta, stats, c)
    if "b4" in meta["corpora"]:
        L.append("For b×4 the last two columns are this run's wall and CPU time ÷ the corpus-b "
                 "medians of the same tool and operation: 4.00 means the cost grows linearly "
                 "with files and bytes (b×4 runs once, tool by tool, not interleaved; CPU time is "
                 "the less noisy of the two on a shared machine). Restores at b×4 run with the "
                 "corpus, an archive and the restored tree in tmpfs at once (about 12 GB); on this "
                 "machine the kernel's time for them grows with the memory in use, which makes "
                 "every tool's restore look superlinear (see docs/design.md, \"Scaling with files "
                 "and bytes\").")
        L.append("")
    elif meta.get("b4_skipped"):
        L.append(f"Corpus b×4 was skipped: {meta['b4_skipped']}.")
        L.append("")
    L.append("![median wall time per operation and tool](chart.png)")
    L.append("")
    L.append("## Goals (computed from this run)")
    L.append("")
    L.append("| Goal | measured | target | result |")
    L.append("|---|--:|--:|---|")
    gs = goals(stats)
    for text, measured, target, ok in gs:
        L.append(f"| {cell(text)} | {measured or 'not measured'} | {target} | "
                 f"{verdict(measured, ok)} |")
    L.append("")
    passed = sum(1 for g in gs if g[3])
    missing = sum(1 for g in gs if g[1] is None)
    L.append(f"{passed} of {len(gs)} goals met"
             f"{f' ({missing} not measured in this run)' if missing else ''}.")
    L.append("")
    par = [(label, stats[("a", op, "ours")]) for op, label in OPS if ("a", op, "ours") in stats]
    if par:
        L.append("Cores ours kept busy on corpus a (median CPU s ÷ median wall s): " +
                 ", ".join(f"{label} {s['cpu'] / s['wall']:.2f}" for label, s in par) +
                 f". Ours runs {meta['cores']} worker threads; a value near 1.00 means the "
                 "run effectively had one core (other work on the machine held the other), "
                 "so the time ratios approach the CPU-time ratios.")
        L.append("")
    pure = pure_section(L, stats)
    return "\n".join(L), gs, pure


def pure_section(L, stats):
    """The pure-Rust build against the same anchors; its goals, for information."""
    if not any(t == "ours-pure" for (_, _, t) in stats):
        return []
    gs = goals(stats, "ours-pure")
    L.append("## The pure-Rust build (`--no-default-features`)")
    L.append("")
    L.append("The library built without ISA-L deflates `best_speed` with zlib-rs level 1 and "
             "inflates with zlib-rs (see docs/design.md). Its rows above are \"ours, pure-Rust "
             "build\"; here its figures are set against the same anchors as the goals of the "
             "default build (the goals are the default build's; these results are for "
             "information).")
    L.append("")
    L.append("| Goal, for the pure-Rust build | measured | target | result |")
    L.append("|---|--:|--:|---|")
    for text, measured, target, ok in gs:
        L.append(f"| {cell(text)} | {measured or 'not measured'} | {target} | "
                 f"{verdict(measured, ok)} |")
    L.append("")
    cost = []
    for op, label in OPS:
        o, p = stats.get(("a", op, "ours")), stats.get(("a", op, "ours-pure"))
        if o and p:
            cost.append(f"{label} {p['wall'] / o['wall']:.2f}× the wall time and "
                        f"{p['cpu'] / o['cpu']:.2f}× the CPU time")
    o, p = stats.get(("a", "create_best_speed", "ours")), stats.get(("a", "create_best_speed",
                                                                     "ours-pure"))
    if o and p and o["size"] and p["size"]:
        cost.append(f"an archive {p['size'] / o['size']:.3f}× the size")
    if cost:
        L.append("On corpus a the pure-Rust build takes, against the default build: " +
                 "; ".join(cost) + ".")
        L.append("")
    return gs


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    meta_path, runs_path, out_dir = sys.argv[1:]
    meta, runs = load(meta_path, runs_path)
    stats = summarize(runs)
    text, gs, pure = report(meta, stats, runs)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(text)
    chart(meta, stats, os.path.join(out_dir, "chart.png"))
    raw = os.path.join(out_dir, "raw",
                       os.path.basename(meta_path).removesuffix(".meta.json") + ".json")
    with open(raw, "w") as f:
        json.dump({"meta": meta, "runs": runs,
                   "summary": [{"corpus": c, "op": o, "tool": t, **s}
                               for (c, o, t), s in sorted(stats.items())],
                   "goals": [{"goal": g[0], "measured": g[1], "target": g[2], "pass": g[3]}
                             for g in gs],
                   "goals_pure_rust": [{"goal": g[0], "measured": g[1], "target": g[2],
                                        "pass": g[3]} for g in pure]}, f, indent=1)
    print(f"wrote {out_dir}/results.md, {out_dir}/chart.png and {raw}")
    for text, measured, target, ok in gs:
        print(f"  {verdict(measured, ok):4}  {text}: {measured or 'not measured'} ({target})")
    for text, measured, target, ok in pure:
        print(f"  pure-Rust build, {verdict(measured, ok):4}  {text}: "
              f"{measured or 'not measured'} ({target})")


if __name__ == "__main__":
    main()
