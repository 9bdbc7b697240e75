"""Linear regression by mini-batch gradient descent on fastnn's GEMM kernels.

The forward pass is one fused call (x @ w + b); the weight gradient x^T @ err is added
into a preallocated buffer batch by batch (accumulate=True), as a training loop does
when it accumulates gradients over micro-batches. The fit is checked against NumPy's
least-squares solution.

Run: python examples/linear_regression.py
"""

import numpy as np

import fastnn
from fastnn import ops


def main(samples=20_000, features=64, epochs=20, batch_size=256, micro_batches=4, lr=0.05, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((samples, features)).astype(np.float32)
    true_w = rng.standard_normal((features, 1)).astype(np.float32)
    y = x @ true_w + 0.5 + 0.1 * rng.standard_normal((samples, 1)).astype(np.float32)

    w = np.zeros((features, 1), np.float32)
    b = np.zeros(1, np.float32)
    grad_w = np.zeros_like(w)
    micro = batch_size // micro_batches
    for epoch in range(epochs):
        order = rng.permutation(samples)
        for start in range(0, samples - batch_size + 1, batch_size):
            grad_w.fill(0)
            grad_b = np.zeros(1, np.float32)
            for part in range(micro_batches):
                idx = order[start + part * micro: start + (part + 1) * micro]
                err = ops.linear(x[idx], w, b) - y[idx]                   # forward + bias, fused
                ops.matmul(x[idx], err, transpose_a=True, out=grad_w, accumulate=True)
                grad_b += err.sum(axis=0)
            w -= lr * (2 / batch_size) * grad_w
            b -= lr * (2 / batch_size) * grad_b
        mse = float(np.mean((ops.linear(x, w, b) - y) ** 2))
        if epoch % 5 == 0 or epoch == epochs - 1:
            print(f"epoch {epoch + 1:2d}  mse {mse:.5f}")

    design = np.hstack([x, np.ones((samples, 1), np.float32)]).astype(np.float64)
    exact = np.linalg.lstsq(design, y.astype(np.float64), rcond=None)[0]
    gap = float(np.abs(np.vstack([w, b[:, None]]) - exact).max())
    print(f"max |w - least-squares solution| = {gap:.4f}")
    return mse, gap


if __name__ == "__main__":
    print(f"fastnn {fastnn.__version__}, {fastnn.get_num_threads()} threads")
    main()
