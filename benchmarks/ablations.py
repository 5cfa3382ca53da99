r"""Paper B's HS2S ablations at demo scale: train, evaluate and tabulate each variant (not a test).

    python benchmarks/ablations.py --table=cells|fusion|references|backbones|families|all \
        [--workdir=runs/ablations] [--epochs=24] [--seed=0] [--timing] [--write_results] \
        [--commands]

Each variant is `configs/hs2s.py:demo_base,<arg>` (e.g. `demo_base,cell=tt_lstm`: the recipe of
the recorded tables, not the faster `demo`), or for the `families` table
`configs/<family>.py:demo_base` (a row argument 'bi_hs2s:' names the config), trained by the demo
command itself (synthetic data -> TFRecords -> training -> evaluation) in WORKDIR/<variant>/,
with one shared schedule: the demo's, shortened to `--epochs` epochs (every epoch-valued
setting scaled by the same factor; the scheduled-sampling slope by its inverse). Reruns skip
finished variants (the demo resumes a stage that was interrupted). The table has paper B's
columns (J and F on seen and unseen categories, their mean "overall") plus J&F, parameters of
the full-size model at 256x448 and of the demo model, training steps/s and wall time.

Training speed: with `--timing` each variant's demo-size training step (batch 4, 6 frames =
5 predicted, scan unrolled, 96x96: benchmarks/train_step.py's `bench`) is timed on its own
(median of 3 after a warm-up) and stored in WORKDIR/<variant>/timing.json; the table's steps/s
then come from it, so the scores can be trained while the machine does other work (training is
deterministic) and the speeds measured on an otherwise idle machine. Without timing.json the
column shows the median logged rate of the training run itself, marked *.

`--write_results` puts each table in benchmarks/RESULTS.md between markers (a rerun of one
table replaces only its section). `--commands` prints the full-scale training commands of
every variant for a pod (launch/tpu_pod.sh) instead of running anything.
"""

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys

from rnn_vos_jax.runtime.config_files import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# table -> ((row label, configs/hs2s.py argument or 'CONFIG:argument'), ...); the first row is
# the authors' HS2S.
TABLES = {
    "cells": (
        ("ConvLSTM (authors')", ""),
        ("ConvLSTM, tanh", "cell=tanh"),
        ("DeepRNN (5 CBM layers)", "cell=deep_rnn"),
        ("ConvTT-LSTM (order 3, steps 3)", "cell=tt_lstm"),
    ),
    "fusion": (
        ("GC (authors')", ""),
        ("cosine similarity (HS2S_sim)", "fusion=cosine"),
        ("axial attention (HS2S_attn)", "fusion=axial"),
    ),
    "references": (
        ("frames 0 and t-1 (authors')", ""),
        ("frame 0 only (HS2S_0)", "references=first"),
        ("frame t-1 only (HS2S_t-1)", "references=previous"),
    ),
    "backbones": (
        ("ResNet-50 (authors')", ""),
        ("ResNet-101", "resnet101"),
        ("VGG16", "backbone=vgg16"),
        ("DeepLab-R50 (OS16)", "backbone=deeplab_r50"),
        ("DeepLab-R50 + ASPP", "backbone=deeplab_r50_aspp"),
        ("Axial-DeepLab-S", "backbone=axial_s"),
    ),
    "families": (
        ("HS2S (authors')", ""),
        ("Bi-HS2S", "bi_hs2s:"),
        ("RAFT-HS2S", "raft_hs2s:"),
    ),
}
PAPER = {  # paper B's overall YouTube-VOS 2018 scores of the same rows, for the reader
    "cells": ("68.9", "-", "-", "-"),
    "fusion": ("68.9", "-", "69.1"),
    "references": ("68.9", "-", "-"),
    "backbones": ("68.9", "69.0", "66.8", "68.9", "67.4", "65.1"),
    "families": ("68.9", "69.8", "68.8"),
}
DEMO_EPOCHS = 80  # configs/hs2s.py demo_base()


def split_arg(arg: str) -> tuple[str, str]:
    """A row argument -> (configs/ module, its argument): 'bi_hs2s:' -> ('bi_hs2s', '');
    'cell=tanh' -> ('hs2s', 'cell=tanh')."""
    head, sep, rest = arg.partition(":")
    return (head, rest) if sep else ("hs2s", arg)


def demo_spec(arg: str) -> str:
    """'hs2s:demo_base,cell=tanh' for the row argument 'cell=tanh' (param_counts / train_step
    name): every table runs on configs/hs2s.py demo_base, the recipe its recorded rows used."""
    module, rest = split_arg(arg)
    return f"{module}:{','.join(filter(None, ['demo_base', rest]))}"


def full_spec(arg: str) -> str:
    module, rest = split_arg(arg)
    return f"{module}:{rest}" if rest else module


def _config(arg: str):
    module, rest = split_arg(arg)
    return load_config(f"{module}:" + ",".join(filter(None, ["demo_base", rest])))


def schedule_overrides(epochs: int) -> dict[str, object]:
    """--config.train.* values that shorten the demo's schedule to `epochs` epochs."""
    t = _config("").train
    f = epochs / t.num_epochs
    scaled = lambda e: e if e < 0 else max(1, round(e * f))  # < 0: off, stays off
    ss = t.scheduled_sampling
    return {
        "train.num_epochs": epochs,
        "train.lr_decay.after_epoch": scaled(t.lr_decay.after_epoch),
        "train.lr_decay.every_epochs": scaled(t.lr_decay.every_epochs),
        "train.scheduled_sampling.offset_epochs": scaled(ss.offset_epochs),
        "train.scheduled_sampling.slope": round(ss.slope / f, 6),
        "train.bn_freeze_after_epoch": scaled(t.bn_freeze_after_epoch),
    }


def variant_name(arg: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]", "_", arg) or "default"


def run_variant(arg: str, workdir: str, epochs: int, seed: int) -> dict:
    """Trains and evaluates one variant through the demo command; returns its row's numbers."""
    out = os.path.join(workdir, variant_name(arg))
    summary_path = os.path.join(out, "demo_summary.json")
    if not os.path.exists(summary_path):
        cmd = [
            sys.executable,
            "-m",
            "rnn_vos_jax.main",
            f"--config={os.path.join(ROOT, 'configs', demo_spec(arg).replace(':', '.py:', 1))}",
            f"--workdir={out}",
            f"--config.seed={seed}",
            *(f"--config.{k}={v}" for k, v in schedule_overrides(epochs).items()),
        ]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)
    with open(summary_path) as f:
        summary = json.load(f)
    with open(os.path.join(out, "eval", "valid", "metrics.json")) as f:
        metrics = json.load(f)
    with open(os.path.join(out, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    rates = [r["steps_per_sec"] for r in rows[1:] if "steps_per_sec" in r]  # [0] has compile
    steps = max((r.get("step", 0) for r in rows), default=0)
    import param_counts  # a sibling script: benchmarks/ is on the path of a script run here

    full = sum(param_counts.count_params(full_spec(arg)).values())
    _, demo_vars = param_counts.abstract_variables(demo_spec(arg), image_size=None)
    demo_params = sum(param_counts.counts_of(demo_vars).values())
    rate_source = "run"
    timing_path = os.path.join(out, "timing.json")
    if os.path.exists(timing_path):
        with open(timing_path) as f:
            rates, rate_source = [1.0 / json.load(f)["step_s"]], "timing"
    block = lambda name: metrics.get(name) or {}
    return {
        "J_seen": block("seen").get("J_mean"),
        "J_unseen": block("unseen").get("J_mean"),
        "F_seen": block("seen").get("F_mean"),
        "F_unseen": block("unseen").get("F_mean"),
        "overall": metrics.get("overall"),
        "JF": metrics["JF_mean"],
        "baseline_JF": summary.get("baseline_JF_mean"),
        "params_full": full,
        "params_demo": demo_params,
        "steps": steps,
        "steps_per_sec": statistics.median(rates) if rates else None,
        "rate_source": rate_source,
        "minutes": summary["seconds"]["total"] / 60,
    }


TIMING = {"batch": 4, "frames": 6, "objects": 1, "repeats": 3}


def time_variant(arg: str, workdir: str) -> dict:
    """Times one variant's demo-size training step (and streaming step) on its own."""
    path = os.path.join(workdir, variant_name(arg), "timing.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    config = _config(arg)
    import train_step  # a sibling script, as param_counts above

    r = train_step.bench(
        demo_spec(arg),
        TIMING["batch"],
        TIMING["frames"],
        TIMING["objects"],
        TIMING["repeats"],
        tuple(config.data.image_size),
        scan_unroll=TIMING["frames"] - 1,
        inference=False,
    )
    r.update(TIMING, image_size=list(config.data.image_size), host=platform.node())
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(r, f, indent=2)
    print(f"timed {arg or 'default'}: train step {r['step_s']:.3f} s", flush=True)
    return r


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def format_table(table: str, rows: list[tuple[str, dict]]) -> str:
    head = (
        "| variant | J seen | J unseen | F seen | F unseen | overall | J&F | paper B overall "
        "| params 256x448 | params demo | steps | steps/s | run wall min |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    lines = [head]
    papers = dict(zip((label for label, _ in TABLES[table]), PAPER[table]))
    for label, r in rows:
        paper = papers.get(label, "-")
        rate = "-" if r["steps_per_sec"] is None else f"{r['steps_per_sec']:.2f}"
        rate += "*" if r.get("rate_source") == "run" and r["steps_per_sec"] else ""
        lines.append(
            f"| {label} | {_pct(r['J_seen'])} | {_pct(r['J_unseen'])} | {_pct(r['F_seen'])} "
            f"| {_pct(r['F_unseen'])} | {_pct(r['overall'])} | {_pct(r['JF'])} | {paper} "
            f"| {r['params_full'] / 1e6:.1f}M | {r['params_demo'] / 1e6:.2f}M | {r['steps']} "
            f"| {rate} | {r['minutes']:.1f} |"
        )
    if any(r.get("rate_source") == "run" for _, r in rows):
        lines.append("\n\\* steps/s logged by the training run itself (not timed on its own).")
    missing = [label for label, _ in TABLES[table] if label not in dict(rows)]
    if missing:
        lines.append(f"\nNot run yet: {', '.join(missing)}.")
    base = rows[0][1].get("baseline_JF") if rows else None
    if base is not None:
        lines.append(f"\nCopy-the-first-mask baseline on the same split: J&F {_pct(base)}.")
    return "\n".join(lines)


RESULTS = os.path.join(ROOT, "benchmarks", "RESULTS.md")


def write_results(table: str, text: str, args, path: str = RESULTS) -> None:
    """Replaces (or appends) this table's section of `path` (benchmarks/RESULTS.md)."""
    start, end = f"<!-- ablations:{table} -->", f"<!-- /ablations:{table} -->"
    stamp = datetime.date.today().isoformat()
    body = (
        f"{start}\n### `{table}`\n\n`python benchmarks/ablations.py --table={table} "
        f"--epochs={args.epochs} --seed={args.seed}` ({stamp}, {platform.node() or 'host'}, "
        f"{os.cpu_count()} CPUs; scores in %):\n\n{text}\n{end}"
    )
    with open(path) as f:
        doc = f.read()
    if start in doc:
        doc = re.sub(
            re.escape(start) + ".*?" + re.escape(end), lambda _: body, doc, flags=re.DOTALL
        )
    else:
        doc = doc.rstrip("\n") + "\n\n" + body + "\n"
    with open(path, "w") as f:
        f.write(doc)


def commands(tables) -> str:
    """The full-scale training and evaluation commands of every variant, for a TPU pod."""
    lines = []
    for table in tables:
        lines.append(f"# {table}")
        for label, arg in TABLES[table]:
            module, rest = split_arg(arg)
            config = f"configs/{module}.py{':' + rest if rest else ''}"
            run = f"gs://BUCKET/runs/{module}_{variant_name(rest)}"
            lines.append(
                f"launch/tpu_pod.sh TPU ZONE {config} {run} "
                "--config.data.train_records=gs://BUCKET/ytvos/train   # " + label
            )
            lines.append(
                f"launch/tpu_pod.sh TPU ZONE {config} {run} --mode=eval "
                "--config.data.eval_dir=gs://BUCKET/ytvos/valid"
            )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--table", default="all", choices=[*TABLES, "all"])
    parser.add_argument("--workdir", default=os.path.join(ROOT, "runs", "ablations"))
    parser.add_argument("--epochs", type=int, default=24, help=f"demo: {DEMO_EPOCHS}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timing", action="store_true", help="time each variant's step alone")
    parser.add_argument(
        "--only_finished", action="store_true", help="tabulate finished variants, train none"
    )
    parser.add_argument("--write_results", action="store_true")
    parser.add_argument("--commands", action="store_true", help="print pod commands and exit")
    args = parser.parse_args(argv)
    tables = list(TABLES) if args.table == "all" else [args.table]
    if args.commands:
        print(commands(tables))
        return
    workdir = os.path.join(args.workdir, f"epochs{args.epochs}_seed{args.seed}")
    done: dict[str, dict] = {}  # the authors' row is shared by every table
    for table in tables:
        rows = []
        for label, arg in TABLES[table]:
            finished = os.path.exists(os.path.join(workdir, variant_name(arg), "demo_summary.json"))
            if args.only_finished and not finished:
                continue
            if arg not in done:
                if args.timing:
                    time_variant(arg, workdir)
                done[arg] = run_variant(arg, workdir, args.epochs, args.seed)
            rows.append((label, done[arg]))
        text = format_table(table, rows)
        print(f"\n## {table}\n{text}\n", flush=True)
        if args.write_results:
            write_results(table, text, args)
    print("Full-scale commands (TPU pod):\n" + commands(tables))


if __name__ == "__main__":
    main()
