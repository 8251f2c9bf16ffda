"""PyTorch on the driver layer beside PyTorch on the local GPU: the same script, the same run.

    python bench/torch_bench.py [--links loopback,edge] [--steps 60] [--out FILE]

Needs a GPU and torch. Each measurement runs the same child script natively and through
``farcuda run`` (which gives a Python program the driver layer: farcuda's libcuda.so.1 under
PyTorch's own runtime and libraries), against a farcudad on this machine, over loopback and
over the emulated edge link (farcuda.daemon.linkproxy: 1 Gbit/s, 0.5 ms each way).

- training: a small GPT (2 layers, d_model 128, 4 heads, 64 tokens, batch 16, AdamW),
  deterministic settings; the time of a step (median over windows of the timed steps), the
  round trips, synchronous round trips and bytes each way of a step (from FARCUDA_REPORT,
  two runs of different lengths, the difference divided by the steps between them), and
  the losses, which must equal the native ones bit for bit;
- inference: greedy decoding of 32 tokens by a small transformer (random weights, fixed
  seed), batch 1 and batch 32: tokens per second, and the tokens, which must equal the
  native ones;
- start-up: from the process's start to its first kernel done, and the bytes sent to the
  server, on a cold module cache (a fresh daemon) and a warm one (the same daemon again).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from paper import start_daemon, stop_daemon  # noqa: E402  (the same daemon launcher)

CHILD = r'''
import json, os, sys, time
mode = sys.argv[1]
if mode == "start":
    import torch
    x = torch.ones(4, device="cuda")
    float((x + 1).sum())
    print("first kernel done", flush=True)
    sys.exit(0)
import torch
torch.manual_seed(0)
torch.use_deterministic_algorithms(True)
torch.backends.cudnn.benchmark = False
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
V, D, H, T, L = 512, 128, 4, 64, 2


class GPT(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.tok = torch.nn.Embedding(V, D)
        self.pos = torch.nn.Embedding(T, D)
        layer = torch.nn.TransformerEncoderLayer(D, H, 4 * D, dropout=0.0, batch_first=True)
        self.body = torch.nn.TransformerEncoder(layer, L, enable_nested_tensor=False)
        self.head = torch.nn.Linear(D, V)
        self.register_buffer("mask", torch.nn.Transformer.generate_square_subsequent_mask(T))

    def forward(self, idx):
        t = idx.shape[1]
        x = self.tok(idx) + self.pos(torch.arange(t, device=idx.device))
        return self.head(self.body(x, mask=self.mask[:t, :t], is_causal=True))


model = GPT().cuda()
if mode == "train":
    steps, warm = int(sys.argv[2]), 5
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(1)
    data = torch.randint(0, V, (steps + warm, 16, T + 1), generator=g)
    losses, marks = [], []
    for i in range(steps + warm):
        if i == warm:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        if i >= warm and (i - warm) % 10 == 0:
            marks.append(time.perf_counter())
        batch = data[i].cuda(non_blocking=False)
        logits = model(batch[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    torch.cuda.synchronize()
    t1 = time.perf_counter()
    marks.append(t1)
    windows = [(b - a) / 10 for a, b in zip(marks, marks[1:])]
    print(json.dumps({"step_s": statistics.median(windows) if windows else (t1 - t0) / steps,
                      "mean_step_s": (t1 - t0) / steps,
                      "losses": [float(x).hex() for x in torch.stack(losses).cpu()]}))
else:
    batch, new = int(sys.argv[2]), 32
    model.eval()
    g = torch.Generator().manual_seed(2)
    idx = torch.randint(0, V, (batch, 8), generator=g).cuda()
    with torch.no_grad():
        for _ in range(3):  # warm up: kernels loaded, workspaces allocated
            model(idx)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = idx
        for _ in range(new):
            nxt = model(out[:, -T:])[:, -1].argmax(-1, keepdim=True)
            out = torch.cat([out, nxt], 1)
        torch.cuda.synchronize()
        t1 = time.perf_counter()
    print(json.dumps({"tokens_per_s": batch * new / (t1 - t0),
                      "tokens": out[:, 8:].cpu().tolist()}))
'''

_REPORT = re.compile(r"report: calls=(\d+) sync_calls=(\d+) bytes_to_server=(\d+) "
                     r"bytes_from_server=(\d+)")


def run(script: Path, args: list, server: str | None, timeout: float = 900) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FARCUDA_")
           and k not in ("LD_PRELOAD", "LD_LIBRARY_PATH")}
    env["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    cmd = [sys.executable, str(script), *map(str, args)]
    if server:
        env["FARCUDA_REPORT"] = "1"
        cmd = [sys.executable, "-m", "farcuda.interposer.cli", "run", "--server", server, "--",
               *cmd]
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    first = p.stdout.readline()
    t_first = time.monotonic() - t0
    rest, err = p.communicate(timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} ({'farcuda' if server else 'native'}) "
                           f"failed:\n{first}{rest}\n{err[-3000:]}")
    out = {"first_s": t_first}
    if args[0] != "start":
        out.update(json.loads(first))
    m = _REPORT.search(err)
    if m:
        keys = ("calls", "sync_calls", "bytes_out", "bytes_in")
        out.update(zip(keys, map(int, m.groups()), strict=True))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--links", default="loopback,edge")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "torch.txt"))
    args = ap.parse_args()
    from farcuda.daemon.linkproxy import ProxyThread

    tmp = Path(tempfile.mkdtemp(prefix="farcuda-torch-"))
    script = tmp / "child.py"
    script.write_text(CHILD)
    lines, failures = [], []

    def say(s: str) -> None:
        print(s, flush=True)
        lines.append(s)

    native = {"train": run(script, ["train", args.steps], None),
              "b1": run(script, ["infer", 1], None), "b32": run(script, ["infer", 32], None),
              "start": statistics.median(run(script, ["start"], None)["first_s"]
                                         for _ in range(3))}
    say(f"native: step {native['train']['step_s'] * 1e3:.2f} ms, b1 "
        f"{native['b1']['tokens_per_s']:.0f} tok/s, b32 {native['b32']['tokens_per_s']:.0f} "
        f"tok/s, first kernel {native['start']:.2f} s")
    for link in args.links.split(","):
        daemon, server = start_daemon({"modules": {"cache": str(tmp / f"cache-{link}")}}, tmp)
        proxy = None
        try:
            if link == "edge":
                proxy = ProxyThread(server, delay=0.0005, rate=1e9).start()
                server = proxy.address
            cold = run(script, ["start"], server)
            warm = run(script, ["start"], server)
            steps = args.steps if link == "loopback" else max(20, args.steps // 3)
            short = run(script, ["train", steps // 2], server)
            train = run(script, ["train", steps], server)
            n = steps - steps // 2
            per = {k: (train[k] - short[k]) / n for k in ("calls", "sync_calls", "bytes_out",
                                                             "bytes_in") if k in train}
            want = native["train"]["losses"][:steps]
            if train["losses"] != want:
                failures.append(f"{link}: training losses differ from native")
            b1 = run(script, ["infer", 1], server)
            b32 = run(script, ["infer", 32], server)
            for b, r in (("b1", b1), ("b32", b32)):
                if r["tokens"] != native[b]["tokens"]:
                    failures.append(f"{link}: inference {b} tokens differ from native")
            ratio = train["step_s"] / native["train"]["step_s"]
            say(f"{link}: training step {train['step_s'] * 1e3:.2f} ms = {ratio:.2f}x native; "
                f"per step {per.get('calls', 0):.0f} round trips, "
                f"{per.get('sync_calls', 0):.1f} synchronous, "
                f"{per.get('bytes_out', 0) / 1024:.1f} KiB to the server, "
                f"{per.get('bytes_in', 0) / 1024:.1f} KiB back; losses "
                f"{'equal native' if train['losses'] == want else 'DIFFER'}")
            say(f"{link}: inference b1 {b1['tokens_per_s']:.0f} tok/s = "
                f"{b1['tokens_per_s'] / native['b1']['tokens_per_s']:.2f}x native, b32 "
                f"{b32['tokens_per_s']:.0f} tok/s = "
                f"{b32['tokens_per_s'] / native['b32']['tokens_per_s']:.2f}x native")
            say(f"{link}: first kernel cold {cold['first_s']:.2f} s "
                f"({cold.get('bytes_out', 0) / 2**20:.1f} MiB sent), warm "
                f"{warm['first_s']:.2f} s ({warm.get('bytes_out', 0) / 2**20:.1f} MiB sent), "
                f"native {native['start']:.2f} s")
        finally:
            if proxy is not None:
                proxy.stop()
            stop_daemon(daemon)
    for f in failures:
        say(f"FAILED: {f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
