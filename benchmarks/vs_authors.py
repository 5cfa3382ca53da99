r"""Our HS2S against the authors' PyTorch HS2S, side by side in one run (not a test).

    python benchmarks/vs_authors.py [--what=inference,train,matmul] [--rounds=2] [--threads=2] \
        [--image_size=256,448] [--batch=2] [--frames=5] [--infer_frames=4] \
        [--remat=none] [--authors_repo=PATH_TO/fatemehazimi990/HS2S]

Each measurement runs in a fresh process pinned to `threads` CPUs (os.sched_setaffinity; torch
also gets torch.set_num_threads), so the sides neither share caches nor inherit each other's
peak memory, and the rounds alternate the sides (ours, theirs, ours, theirs, ...) so that a
machine that slows down during the run slows both. Printed per measurement: the median time of
`repeats` runs after a warm-up and the process's peak resident memory (ru_maxrss); at the end
the ratio theirs / ours (> 1: ours faster). Each line also gives the achieved GFLOP/s: our
FLOPs from XLA's cost analysis of the compiled call (rnn_vos_jax.runtime.throughput), theirs from torch's
FlopCounterMode on the warm-up call (it counts convolutions and matmuls, which are nearly all of
them); the summary says at what rate our FLOPs would have to run for 1.3x theirs.

- inference: seconds per object-frame of the streaming prediction at `image_size`: ours is the
  jitted `step` (benchmarks/train_step.py), theirs the authors' test-mode loop body (reference
  encoder on frame t-1 with the previous soft mask, encoder on frame t, both memories, decoder,
  sigmoid) in eval mode under torch.no_grad, timed over `infer_frames` frames.
- matmul: one float32 matmul of the skip memory's shape (MATMUL), XLA's against torch's: the
  machine's matmul rate, to read the two sides' GFLOP/s against.
- train: one training step on `batch` clips of `frames` frames with teacher forcing: ours the
  jitted, donated `train_state.train_step` (forward, loss, backward, Adam); theirs forward
  (the authors' train-mode loop), a loss over every predicted frame, backward and torch Adam.
  Ours runs with `config.model.remat=--remat`: 'none' (default) with the scan unrolled, the
  fastest on CPU; 'steps' with the scan as a loop, which it needs to save memory.

Both sides run with the same host-memory setting: the run restarts itself with glibc's malloc on
transparent huge pages (rnn_vos_jax/runtime/host_memory.py) and the workers inherit it;
RNN_VOS_JAX_HUGE_PAGES=0 runs both sides on glibc's defaults. It matters to both: torch's
training step frees and re-maps its large activations as XLA does its temporary buffer.

Theirs is the authors' `networks.ModelMatch` when `--authors_repo` points at a checkout of
fatemehazimi990/HS2S and torchvision imports (their code builds its encoders from
torchvision.models.resnet50); otherwise the tests' re-implementation of the same module
(tests/torch_reference.py: the same layers, widths and loop, written for the weight-conversion
parity tests, which check that both give the same outputs to 1e-4 given the same weights). The
line `theirs:` says which ran. Their loss there is BCE on the mask logits plus cross-entropy on
the distance classes (the authors' weighted BCE + Jaccard costs the same to within noise: a few
elementwise passes over [B, 1, H, W]). Weights are random: speed does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULT = "RESULT "


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _pin(threads: int) -> None:
    cpus = sorted(os.sched_getaffinity(0))[:threads]
    os.sched_setaffinity(0, cpus)


# --- ours -----------------------------------------------------------------------------------------


def _ours(what: str, args) -> dict:
    import train_step  # a sibling script; after pinning: XLA sizes its thread pool at import

    r = train_step.bench(
        "hs2s",
        batch=args.batch if what == "train" else 1,
        frames=args.frames if what == "train" else 3,
        objects=1,
        repeats=args.repeats,
        image_size=args.image_size,
        scan_unroll=(args.frames - 1 if args.remat == "none" else 1) if what == "train" else 2,
        train=what == "train",
        inference=what == "inference",
        remat=args.remat,
    )
    seconds = r["step_s"] if what == "train" else r["infer_frame_s"]
    compile_s = r["step_compile_s"] if what == "train" else r["infer_compile_s"]
    rate = (r["step_rates"] if what == "train" else r["infer_rates"]).get("flops_per_sec")
    # FLOPs per measured unit (training step or object-frame), from XLA's cost analysis
    return {"seconds": seconds, "compile_s": compile_s, "flops": rate and rate * seconds}


MATMUL = (448, 51200, 4096)  # the skip memory's gate conv as windows x kernel, per object-frame


def _matmul_worker(side: str, repeats: int) -> dict:
    """Seconds per float32 matmul of MATMUL's shape: XLA's (ours) or torch's (theirs)."""
    m, k, n = MATMUL
    if side == "ours":
        import jax
        import jax.numpy as jnp

        a = jax.random.normal(jax.random.key(0), (m, k), jnp.float32)
        b = jax.random.normal(jax.random.key(1), (k, n), jnp.float32)
        f = jax.jit(jnp.dot)
        call = lambda: jax.block_until_ready(f(a, b))
    else:
        import torch

        torch.set_num_threads(len(os.sched_getaffinity(0)))
        a, b = torch.randn(m, k), torch.randn(k, n)
        call = lambda: torch.mm(a, b)
    t0 = time.perf_counter()
    call()
    first_s = time.perf_counter() - t0
    times = []
    for _ in range(max(3, repeats)):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return {"seconds": statistics.median(times), "compile_s": first_s, "flops": 2.0 * m * k * n}


# --- theirs ---------------------------------------------------------------------------------------


def _their_model(authors_repo: str | None):
    """(torch ModelMatch in train-capable form, description)."""
    if authors_repo:
        try:
            import networks  # on the worker's PYTHONPATH (_run)
            import torchvision.models

            model = networks.ModelMatch(
                epsilon=0.5, backbone=torchvision.models.resnet50, num_classes=42
            )
            return model, f"the authors' networks.ModelMatch from {authors_repo}", True
        except ImportError as error:
            print(f"cannot import the authors' code ({error}); using the re-implementation")
    import torch_reference  # tests/, on the worker's PYTHONPATH (_run)

    model = torch_reference.ModelMatch()
    return model, "tests/torch_reference.py ModelMatch (re-implementation)", False


def _their_step(model, ref, m0, frame_prev, frame, mask, state):
    """One step of the authors' loop: -> (logit, distance logits, state)."""
    h, c, h_sm, c_sm = state
    prev, _, m1, *_ = model.encoder_ref(frame_prev, mask)
    enc = model.encoder(frame, mask)
    h, c = model.memory(enc[0], (h, c))
    h_sm, c_sm = model.skip_memory(enc[2], (h_sm, c_sm))
    out = model.decoder(ref, h, enc[1:], prev, h_sm, [m0, m1])
    return out[0], out[1], (h, c, h_sm, c_sm)


def _zero_state(torch, n, h, w, channels=1024):
    big = torch.zeros(n, channels, h // 32, w // 32)
    small = torch.zeros(n, channels, h // 16, w // 16)
    return big, big.clone(), small, small.clone()


def _theirs(what: str, args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, source, _ = _their_model(args.authors_repo)
    h, w = args.image_size
    n = args.batch if what == "train" else 1
    t = args.frames if what == "train" else args.infer_frames
    frames = torch.randn(t, n, 3, h, w)
    masks = torch.zeros(t, n, 1, h, w)
    masks[:, :, :, h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 1.0
    distance = torch.zeros(t, n, h, w, dtype=torch.long)

    if what == "inference":
        model.eval()

        def run():
            with torch.no_grad():
                ref, _, m0, *_ = model.encoder_ref(frames[0], masks[0])
                state, mask = _zero_state(torch, n, h, w), masks[0]
                for i in range(t - 1):
                    logit, _, state = _their_step(
                        model, ref, m0, frames[i], frames[i + 1], mask, state
                    )
                    mask = torch.sigmoid(logit)
            return t - 1

    else:
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)

        def run():
            opt.zero_grad(set_to_none=True)
            ref, _, m0, *_ = model.encoder_ref(frames[0], masks[0])
            state, loss = _zero_state(torch, n, h, w), 0.0
            for i in range(t - 1):  # teacher forcing: the ground truth of frame i is fed
                logit, dist, state = _their_step(
                    model, ref, m0, frames[i], frames[i + 1], masks[i], state
                )
                loss = loss + torch.nn.functional.binary_cross_entropy_with_logits(
                    logit, masks[i + 1]
                )
                loss = loss + torch.nn.functional.cross_entropy(dist, distance[i + 1])
            loss.backward()
            opt.step()
            return 1

    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)  # on the warm-up call only: it slows the ops
    t0 = time.perf_counter()
    with counter:
        per_call = run()
    first_s = time.perf_counter() - t0
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return {
        "seconds": statistics.median(times) / per_call,
        "compile_s": first_s,  # the warm-up call (torch has no compilation; allocator warm-up)
        "source": source,
        "flops": counter.get_total_flops() / per_call,
    }


# --- driver ---------------------------------------------------------------------------------------


UNITS = {
    "inference": "s per object-frame",
    "train": "s per training step",
    "matmul": f"s per matmul {MATMUL}",
}


def _gflops(res: dict) -> str:
    """'123 GFLOP/s' achieved by one measurement (or why there is no figure)."""
    if not res.get("flops"):
        return "no FLOP count"
    return f"{res['flops'] / res['seconds'] / 1e9:.0f} GFLOP/s"


def _worker(args) -> None:
    side, what = args._worker.split(":")
    _pin(args.threads)
    if what == "matmul":
        result = _matmul_worker(side, args.repeats)
    else:
        result = (_ours if side == "ours" else _theirs)(what, args)
    result["peak_rss_gib"] = _peak_rss_gib()
    print(RESULT + json.dumps(result), flush=True)


def _run(side: str, what: str, argv: list[str], authors_repo: str | None) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), f"--_worker={side}:{what}", *argv]
    env = dict(os.environ)
    if side == "theirs":  # their modules: the authors' checkout, else the tests' re-implementation
        paths = [authors_repo or "", os.path.join(ROOT, "tests"), env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT)]
    if proc.returncode or not lines:
        raise RuntimeError(
            f"{side} {what} failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n"
            f"{proc.stderr[-4000:]}"
        )
    return json.loads(lines[-1][len(RESULT) :])


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--what", default="inference,train,matmul")
    p.add_argument("--rounds", type=int, default=2, help="alternations of ours / theirs")
    p.add_argument("--repeats", type=int, default=2, help="timed runs per measurement")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--image_size", default="256,448")
    p.add_argument("--batch", type=int, default=2, help="clips per training step")
    p.add_argument("--frames", type=int, default=5, help="frames per training clip")
    p.add_argument("--infer_frames", type=int, default=4, help="frames of the timed inference")
    p.add_argument("--remat", default="none", choices=("none", "encoders", "steps"))
    p.add_argument("--authors_repo", default=None)
    p.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.image_size = tuple(int(v) for v in args.image_size.split(","))
    if args._worker:
        return _worker(args)
    print(f"command: python benchmarks/vs_authors.py {' '.join(argv)}")
    print(f"{os.cpu_count()} host CPUs, {args.threads} threads per side, {args.image_size}")
    for what in args.what.split(","):
        got = {"ours": [], "theirs": []}
        for r in range(args.rounds):
            for side in ("ours", "theirs"):
                res = _run(side, what, argv, args.authors_repo)
                got[side].append(res)
                extra = f" ({res['source']})" if "source" in res else ""
                print(
                    f"{what} round {r} {side:6s}: {res['seconds']:8.3f} s, first call "
                    f"{res['compile_s']:6.1f} s, peak RSS {res['peak_rss_gib']:5.1f} GiB, "
                    f"{_gflops(res)}{extra}",
                    flush=True,
                )
        ours = statistics.median(x["seconds"] for x in got["ours"])
        theirs = statistics.median(x["seconds"] for x in got["theirs"])
        unit = UNITS[what]
        mem = {k: max(x["peak_rss_gib"] for x in v) for k, v in got.items()}
        print(
            f"{what}: ours {ours:.3f} {unit}, theirs {theirs:.3f}: theirs / ours = "
            f"{theirs / ours:.2f}x; peak RSS ours {mem['ours']:.1f} GiB, theirs "
            f"{mem['theirs']:.1f} GiB"
        )
        flops = got["ours"][0].get("flops")
        if what != "matmul" and flops:
            # The rate our FLOPs would need to run at for the 1.3x, for comparison with
            # this machine's matmul rate (--what=matmul).
            print(
                f"{what}: ours {flops / 1e9:.0f} GFLOP, theirs "
                f"{got['theirs'][0]['flops'] / 1e9:.0f} GFLOP (torch's count: convolutions and "
                f"matmuls); 1.3x theirs would need ours at "
                f"{1.3 * flops / theirs / 1e9:.0f} GFLOP/s"
            )


if __name__ == "__main__":
    from rnn_vos_jax.runtime import host_memory

    host_memory.reexec_with_huge_pages()  # benchmarks/RESULTS.md: CPU figures use it
    from rnn_vos_jax.runtime import compile_cache

    compile_cache.enable()  # $RNN_VOS_JAX_COMPILATION_CACHE or the user's cache; 'off' for cold
    main()
