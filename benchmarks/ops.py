"""conv2d speed at the reference CNN's shapes, next to this machine's float32 matmul speed.

    python benchmarks/ops.py [--batch 128] [--repeat 20]

For each layer: forward and forward+backward time (median of --repeat runs after warm-up) and the
GFLOP/s they reach (2*N*OH*OW*F*C*KH*KW flops forward, three times that for forward+backward when
the input needs a gradient, twice when it does not), and the GFLOP/s of one float32 matmul of the
layer's im2col shape: the ceiling for an im2col convolution.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import numpy as np

import tinygrad_cnn as tc
from tinygrad_cnn import Tensor

LAYERS = [  # name, input (C, H, W), filters F, input needs grad
    ("conv1 1->32 on 28x28", (1, 28, 28), 32, False),
    ("conv2 32->64 on 13x13", (32, 13, 13), 64, True),
]


_MATMUL = """
import sys, time, numpy as np
m, k, n, repeat = map(int, sys.argv[1:])
rng = np.random.default_rng(0)
a, b = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((k, n)).astype(np.float32)
a @ b
times = []
for _ in range(repeat):
    start = time.perf_counter(); a @ b; times.append(time.perf_counter() - start)
print(2 * m * k * n / float(np.median(times)) / 1e9)
"""


def numpy_matmul_gflops(m: int, k: int, n: int, repeat: int) -> float:
    """GFLOP/s of one float32 (m, k) @ (k, n) in a fresh NumPy process, BLAS at its default threads
    (importing tinygrad_cnn holds BLAS to one thread: its own threads split the batch instead)."""
    out = subprocess.run([sys.executable, "-c", _MATMUL, str(m), str(k), str(n), str(repeat)],
                         capture_output=True, text=True, check=True)
    return float(out.stdout)


def median_seconds(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"batch {args.batch}, float32, 3x3 kernels, median of {args.repeat}")
    print(f"{'layer':24} {'fwd ms':>8} {'GFLOP/s':>8} {'fwd+bwd ms':>11} {'GFLOP/s':>8} {'matmul GFLOP/s':>15}")
    for name, (c, h, w), f, input_grad in LAYERS:
        x_nhwc = rng.standard_normal((args.batch, h, w, c)).astype(np.float32)
        x = Tensor(x_nhwc.transpose(0, 3, 1, 2), requires_grad=input_grad)  # as activations arrive
        wt = Tensor(rng.standard_normal((f, c, 3, 3)).astype(np.float32) * 0.1, requires_grad=True)
        b = Tensor(np.zeros(f, np.float32), requires_grad=True)
        m, k = args.batch * (h - 2) * (w - 2), 9 * c
        flops = 2 * m * k * f
        # upstream gradients arrive channels-last in memory, like the activations (see ops/conv.py)
        g = np.ones((args.batch, h - 2, w - 2, f), np.float32).transpose(0, 3, 1, 2)

        def forward():
            with tc.no_grad():
                tc.conv2d(x, wt, b)

        def forward_backward():
            tc.conv2d(x, wt, b).backward(g)

        fwd = median_seconds(forward, args.repeat)
        both = median_seconds(forward_backward, args.repeat)
        mm_gflops = numpy_matmul_gflops(m, k, f, args.repeat)
        both_flops = flops * (3 if input_grad else 2)
        print(f"{name:24} {fwd * 1e3:8.2f} {flops / fwd / 1e9:8.1f} {both * 1e3:11.2f} "
              f"{both_flops / both / 1e9:8.1f} {mm_gflops:15.1f}")
    print(f"square float32 matmul 2048x2048 (NumPy, BLAS default threads): "
          f"{numpy_matmul_gflops(2048, 2048, 2048, 5):.1f} GFLOP/s")


if __name__ == "__main__":
    main()
