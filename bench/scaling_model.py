"""Predicts data-parallel scaling over a network from what distributed.py measured here:
``python bench/scaling_model.py [--latency-us 20] [--efficiency 0.8] [--bucket-kb 0] ...``.

Reads bench/distributed_measured.json (written by ``python bench/distributed.py``): for
the MLP, the CNN and the LSTM text model, the 1-process 1-thread training step split into
forward, backward per layer (with each layer's gradient bytes), optimizer step and the rest
(loss, batching, Python), at the per-process batches global/N; and the cost per byte of the
all-reduce's summation (``a += b``, 1 thread). Prints Markdown tables; bench/SCALING.md has them
with the model written out.

The model (a node = one process computing as fast as the measured 1-thread process, or
``--compute-speedup`` times faster):

    T_comm(N, S) = 2(N-1)/N · S / BW + 2(N-1) · α + (N-1)/N · S · γ        (ring all-reduce)
    no overlap:   T_step(N) = T_fwd(b) + T_other(b) + T_bwd(b) + T_comm(N, S_all) + T_opt
    overlap:      T_step(N) = T_fwd(b) + T_other(b) + end of the last bucket's all-reduce + T_opt

with S bytes of float32 gradients, BW = link rate × efficiency, α the per-message latency, γ
the summation's seconds per byte, b = global batch / N (strong scaling; the per-process batch
measured at that size, and also the ideal T(B)/N) or the benchmark's batch (weak scaling).
Overlap: the backward runs layer by layer from the output (each layer's measured backward
time); the gradients are grouped into buckets of consecutive layers in that order
(``--buckets``: by default the fastest grouping, which may be one bucket, i.e. no overlap);
bucket k's all-reduce starts when its last layer's backward ends and the previous bucket's
all-reduce is done (one at a time, as PyTorch DDP's buckets), each paying its own 2(N-1)·α.
Its closed form, T_fwd + max(T_bwd, T_comm - T_comm,last) + T_comm,last, is printed beside it.
fastnn implements both: ``DataParallel(bucket_bytes=None)`` is "no overlap" (the default on one
machine), ``bucket_bytes=262144`` (the default across machines) cuts the buffer into buckets of at
least 256 KiB from its end, which ``--buckets 262.144`` approximates with whole layers (the
model knows each layer's gradient bytes, fastnn cuts between weights). The optimizer step runs
after the all-reduce on every node (replicated work that does not shrink with N). Communication is assumed to progress without slowing the backward (a CPU has
to spend cycles on it; the summary prints how much slowdown of the backward would cancel the
saving).
"""

import argparse
import json
import pathlib

HERE = pathlib.Path(__file__).resolve().parent
NAMES = {"mlp": "MLP 784-256-128-10 (batch 128)", "cnn": "CNN Keras MNIST model (batch 64)",
         "lstm": "LSTM Embedding(10000,128)→LSTM(128)→Dense(1), 256 ids (batch 64)"}


def t_comm(n, nbytes, bandwidth, latency, gamma):
    """Ring all-reduce of nbytes over n nodes (seconds)."""
    if n <= 1 or nbytes <= 0:
        return 0.0
    return 2 * (n - 1) / n * nbytes / bandwidth + 2 * (n - 1) * latency + (n - 1) / n * nbytes * gamma


class Model:
    """One network's measured step profile."""

    def __init__(self, name, profile, speedup=1.0):
        self.name = name
        self.layers = profile["layers"]
        self.grad_bytes = profile["layer_grad_bytes"]
        self.total_bytes = sum(self.grad_bytes)
        self.parameters = profile["parameters"]
        self.global_batch = profile["global_batch"]
        self.per_batch = {int(b): p for b, p in profile["per_batch"].items()}
        self.speedup = speedup

    def parts(self, b):
        """(forward, other, backward per layer in backward order with bytes, optimizer) at per-node
        batch b (seconds, divided by the compute speed-up)."""
        p = self.per_batch[b]
        s = self.speedup
        layer_times = p["layers_backward"]
        total = sum(layer_times)
        scale = p["backward"] / total if total > 0 else 0.0  # graph overhead spread over the layers
        backward = [(layer_times[i] * scale / s, self.grad_bytes[i]) for i in reversed(range(len(self.layers)))]
        return p["forward"] / s, p["other"] / s, backward, p["optimizer"] / s

    def ideal_parts(self, n):
        """The brief's T_compute(global batch)/N: forward, other and backward of the global batch
        divided by n; the optimizer step (replicated on every node) is not divided."""
        fwd, other, backward, opt = self.parts(self.global_batch)
        return fwd / n, other / n, [(t / n, s) for t, s in backward], opt

    @staticmethod
    def _events(backward):
        """(time the layer's gradient is ready, its bytes) for each layer with weights, in backward
        order, and the backward's total time."""
        clock, events = 0.0, []
        for t, nbytes in backward:
            clock += t
            if nbytes:
                events.append((clock, nbytes))
        return events, clock

    @staticmethod
    def _splits(k, buckets):
        """Candidate groupings of k gradient events into consecutive buckets (lists of sizes)."""
        if buckets == "best":
            for mask in range(1 << max(0, k - 1)):
                sizes, run = [], 1
                for i in range(k - 1):
                    if mask >> i & 1:
                        sizes.append(run)
                        run = 1
                    else:
                        run += 1
                yield sizes + [run]
        elif buckets == "layer":
            yield [1] * k
        else:
            yield None  # a byte cap: grouped greedily in _simulate

    def _simulate(self, n, events, t_bwd, net, sizes):
        bw, latency, gamma = net["bandwidth"], net["latency"], net["gamma"]
        if sizes is None:  # greedy by the cap, as PyTorch DDP's bucket_cap_mb
            sizes, run, pending = [], 0, 0
            for _, nbytes in events:
                run += 1
                pending += nbytes
                if pending >= net["buckets"]:
                    sizes.append(run)
                    run, pending = 0, 0
            if run:
                sizes.append(run)
        comm_end, i, groups = 0.0, 0, []
        for size in sizes:
            group = events[i:i + size]
            i += size
            nbytes = sum(b for _, b in group)
            groups.append(nbytes)
            comm_end = max(group[-1][0], comm_end) + t_comm(n, nbytes, bw, latency, gamma)
        return max(t_bwd, comm_end), groups

    def step(self, n, parts, net, overlap):
        """Seconds per step on n nodes; with overlap also the buckets used (bytes each)."""
        fwd, other, backward, opt = parts
        events, t_bwd = self._events(backward)
        if not overlap:
            return fwd + other + t_bwd + t_comm(n, self.total_bytes, net["bandwidth"], net["latency"],
                                                net["gamma"]) + opt
        candidates = self._splits(len(events), net["buckets"])
        best = min((self._simulate(n, events, t_bwd, net, sizes) for sizes in candidates),
                   key=lambda found: (round(found[0], 9), len(found[1])))  # a tie: fewer buckets
        return fwd + other + best[0] + opt, best[1]

    def brief_formula(self, n, parts, net, groups):
        """The closed form T_fwd + max(T_bwd, T_comm - T_comm,last) + T_comm,last (+ other + optimizer)
        for the same buckets: every bucket but the last can hide behind the backward, the last
        (the input-side layers, ready when the backward ends) cannot. (Written as
        max(T_bwd, T_comm) + T_comm,last it counts the last bucket twice, which for one bucket
        predicts a step slower than without overlap.) It ignores when each bucket is ready."""
        fwd, other, backward, opt = parts
        t_bwd = sum(t for t, _ in backward)
        comm = sum(t_comm(n, s, net["bandwidth"], net["latency"], net["gamma"]) for s in groups)
        last = t_comm(n, groups[-1], net["bandwidth"], net["latency"], net["gamma"])
        return fwd + other + max(t_bwd, comm - last) + last + opt


def predict(model, nodes, networks, scaling):
    """Rows of dicts: per N, the compute, and per network the steps without / with overlap."""
    b1 = model.global_batch
    one = model.step(1, model.parts(b1), networks[0], False)  # one node, global batch, no comm
    rows = []
    for n in nodes:
        if scaling == "strong":
            b = max(1, b1 // n)
            parts = model.parts(b)
        elif scaling == "ideal":
            b = b1 / n
            parts = model.ideal_parts(n)
        else:
            b = b1
            parts = model.parts(b1)
        fwd, other, backward, opt = parts
        row = {"n": n, "b": b, "compute": fwd + other + sum(t for t, _ in backward) + opt,
               "backward": sum(t for t, _ in backward), "nets": []}
        for net in networks:
            plain = model.step(n, parts, net, False)
            overlapped, groups = model.step(n, parts, net, True)
            brief = model.brief_formula(n, parts, net, groups)
            if scaling == "weak":
                speed = n * one / plain, n * one / overlapped
            else:
                speed = one / plain, one / overlapped
            row["nets"].append({"comm": t_comm(n, model.total_bytes, net["bandwidth"], net["latency"], net["gamma"]),
                                "plain": plain, "overlap": overlapped, "brief": brief,
                                "speedup": speed[0], "speedup_overlap": speed[1],
                                "eff": speed[0] / n, "eff_overlap": speed[1] / n,
                                "saving": 1 - overlapped / plain, "saving_brief": 1 - brief / plain,
                                "buckets": groups,
                                "tolerated_slowdown": (plain - overlapped) / row["backward"]})
        rows.append(row)
    return rows


def table(model, rows, networks, scaling):
    what = {"strong": "strong scaling, global batch fixed, per-node batch b = B/N measured",
            "ideal": "strong scaling, ideal compute T(B)/N (optimizer step not divided)",
            "weak": "weak scaling, per-node batch fixed at B"}[scaling]
    head = "| N | b/node | compute ms |"
    rule = "| ---: | ---: | ---: |"
    for net in networks:
        g = net["label"]
        head += (f" {g}: all-reduce ms | {g}: step ms | {g}: speed-up | {g}: eff. | "
                 f"{g} overlap: step ms | {g} overlap: eff. | {g}: overlap saves |")
        rule += " ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    lines = [f"**{NAMES[model.name]}** — {what}; {model.parameters:,} parameters, "
             f"{model.total_bytes / 1e6:.2f} MB of gradients per all-reduce", "", head, rule]
    for row in rows:
        b = f"{row['b']:g}"
        line = f"| {row['n']} | {b} | {row['compute'] * 1e3:.2f} |"
        for r in row["nets"]:
            line += (f" {r['comm'] * 1e3:.2f} | {r['plain'] * 1e3:.2f} | {r['speedup']:.1f}× | {r['eff']:.0%} | "
                     f"{r['overlap'] * 1e3:.2f} | {r['eff_overlap']:.0%} | {r['saving']:.1%} |")
        lines.append(line)
    return "\n".join(lines)


def summary(models, nodes, networks, scalings, threshold):
    head = ("| model | scaling | network | N | step ms no overlap | step ms overlap | saving (simulated) | "
            f"saving (closed form) | backward slowdown tolerated | buckets KB, first sent first | "
            f"≥ {threshold:.0%}? |")
    lines = [head, "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    for model in models:
        for scaling in scalings:
            rows = predict(model, nodes, networks, scaling)
            for k, net in enumerate(networks):
                for row in rows:
                    if row["n"] < 8:
                        continue
                    r = row["nets"][k]
                    lines.append(f"| {model.name.upper()} | {scaling} | {net['label']} | {row['n']} | "
                                 f"{r['plain'] * 1e3:.2f} | {r['overlap'] * 1e3:.2f} | {r['saving']:.1%} | "
                                 f"{r['saving_brief']:.1%} | {r['tolerated_slowdown']:.0%} | "
                                 f"{' + '.join(f'{g / 1e3:.0f}' for g in r['buckets'])} | "
                                 f"{'yes' if r['saving'] >= threshold else 'no'} |")
    return "\n".join(lines)


def profile_table(models):
    lines = ["| model | per-node batch | forward ms | backward ms | optimizer ms | other ms | step ms | "
             "backward per layer, output first: ms (gradient KB) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for model in models:
        for b in sorted(model.per_batch, reverse=True):
            p = model.per_batch[b]
            per_layer = ", ".join(f"{model.layers[i]} {p['layers_backward'][i] * 1e3:.2f} "
                                  f"({model.grad_bytes[i] / 1e3:.0f})" for i in reversed(range(len(model.layers))))
            lines.append(f"| {model.name.upper()} | {b} | {p['forward'] * 1e3:.2f} | {p['backward'] * 1e3:.2f} | "
                         f"{p['optimizer'] * 1e3:.2f} | {p['other'] * 1e3:.2f} | {p['step'] * 1e3:.2f} | {per_layer} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measured", default=str(HERE / "distributed_measured.json"),
                        help="distributed.py's measurements (default bench/distributed_measured.json)")
    parser.add_argument("--networks", default="10,100", help="link rates in Gb/s (default 10,100)")
    parser.add_argument("--efficiency", type=float, default=0.8,
                        help="fraction of the link rate an all-reduce gets (default 0.8)")
    parser.add_argument("--latency-us", type=float, default=20.0,
                        help="per-message latency α in µs (TCP over Ethernet: ~5-50; default 20)")
    parser.add_argument("--no-sum-cost", action="store_true", help="γ = 0: leave the summation's cost out")
    parser.add_argument("--buckets", default="best",
                        help="the overlap's buckets: 'best' (default: the fastest grouping of consecutive "
                             "layers, one bucket = no overlap), 'layer' (one per layer with weights), or a cap "
                             "in KB (greedy, as DDP's bucket_cap_mb; its default 25 MB puts each of these "
                             "models in one bucket; 262.144 ≈ fastnn's 256 KiB buckets)")
    parser.add_argument("--compute-speedup", type=float, default=1.0,
                        help="nodes compute this many times faster than the measured 1-thread process")
    parser.add_argument("--nodes", default="2,4,8,16,32,64")
    parser.add_argument("--models", default="mlp,cnn,lstm")
    parser.add_argument("--scaling", default="strong,weak,ideal", help="any of strong, weak, ideal")
    parser.add_argument("--threshold", type=float, default=0.10, help="a saving that 'pays' (default 0.10)")
    parser.add_argument("--summary-only", action="store_true")
    args = parser.parse_args(argv)

    measured = json.loads(pathlib.Path(args.measured).read_text())
    gamma = 0.0 if args.no_sum_cost else measured["sum_seconds_per_byte"]
    networks = [{"label": f"{g:g} Gb/s", "bandwidth": g * 1e9 / 8 * args.efficiency, "latency": args.latency_us * 1e-6,
                 "gamma": gamma,
                 "buckets": args.buckets if args.buckets in ("best", "layer") else float(args.buckets) * 1e3}
                for g in map(float, args.networks.split(","))]
    nodes = [int(n) for n in args.nodes.split(",")]
    models = [Model(name, measured["profile"][name], args.compute_speedup) for name in args.models.split(",")]
    scalings = args.scaling.split(",")

    print("Parameters: " + "; ".join(f"{net['label']} → {net['bandwidth'] / 1e9:.2f} GB/s effective"
                                    for net in networks)
          + f"; α = {args.latency_us:g} µs per message; γ = {gamma * 1e12:.1f} ps/byte (summation, measured); "
          f"buckets: {args.buckets if args.buckets in ('best', 'layer') else args.buckets + ' KB cap'}; "
          f"compute speed-up ×{args.compute_speedup:g}; measured {measured['machine'][0][2:]}\n")
    if not args.summary_only:
        print("Measured 1-process 1-thread step (medians):\n")
        print(profile_table(models) + "\n")
        for model in models:
            for scaling in scalings:
                print(table(model, predict(model, nodes, networks, scaling), networks, scaling) + "\n")
    print(f"Overlap at N ≥ 8 (pays: saves ≥ {args.threshold:.0%} of the step):\n")
    print(summary(models, nodes, networks, scalings, args.threshold))


if __name__ == "__main__":
    main()
