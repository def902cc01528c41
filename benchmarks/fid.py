"""Images/s through the FID Inception: jaxlab's Flax network vs the same network in PyTorch, one process.

  python -m benchmarks.fid                  # batch 64, 3 interleaved rounds
  python -m benchmarks.fid --batch=64 --rounds=5 --threads=2

pytorch-fid itself cannot be installed here (its torchvision dependency has no wheel matching the
local CPU torch build), so the PyTorch side is ``TorchFIDInception`` below: pytorch-fid's
``fid_inception_v3`` (torchvision Inception3 with the FIDInceptionA/C/E_1/E_2 blocks) rebuilt
from ``torch.nn`` layer for layer, eval mode, BatchNorm unfolded as pytorch-fid runs it. Both get
the same parameters (the golden test's NumPy recipe; speed does not depend on the values), and the
script first checks that their pool3 features agree. Timed: the network on a 299x299 batch
(``jax.jit``'d apply vs ``torch.inference_mode``), median of interleaved rounds after a warm-up;
the JAX row also shows the ADM input path (TF1 resize from 256x256 + normalise) fused in.
Absolute numbers were taken on a shared, loaded machine: compare the rows, not across runs.
"""

import argparse
import math
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.common import print_table
from jaxlab.convert import from_torch
from jaxlab.eval.inception import adm_inception_input


class BasicConv2d(nn.Module):
    def __init__(self, cin, cout, **kw):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class BlockA(nn.Module):
    def __init__(self, cin, pool_features):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, kernel_size=1)

    def forward(self, x):
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        pool = self.branch_pool(F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))
        return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)), b3, pool], 1)


class BlockB(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, 3, 2)], 1)


class BlockC(nn.Module):
    def __init__(self, cin, c7):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for i in range(1, 6):
            bd = getattr(self, f"branch7x7dbl_{i}")(bd)
        pool = self.branch_pool(F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))
        return torch.cat([self.branch1x1(x), b7, bd, pool], 1)


class BlockD(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, 2)], 1)


class BlockE(nn.Module):
    def __init__(self, cin, max_pool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        pooled = F.max_pool2d(x, 3, 1, 1) if self.max_pool else F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
        return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(pooled)], 1)


class TorchFIDInception(nn.Module):
    """pytorch-fid's fid_inception_v3 up to pool3 (+ fc), state_dict names as pytorch-fid's."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = BlockA(192, 32), BlockA(256, 64), BlockA(288, 64)
        self.Mixed_6a = BlockB(288)
        self.Mixed_6b, self.Mixed_6c = BlockC(768, 128), BlockC(768, 160)
        self.Mixed_6d, self.Mixed_6e = BlockC(768, 160), BlockC(768, 192)
        self.Mixed_7a = BlockD(768)
        self.Mixed_7b, self.Mixed_7c = BlockE(1280, max_pool=False), BlockE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)

    def forward(self, x):
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, 2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, 2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


def recipe_state_dict(keys_shapes, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for key, shape in keys_shapes:
        if key.endswith("conv.weight"):
            out[key] = rng.standard_normal(shape, dtype=np.float32) * np.float32(math.sqrt(2 / np.prod(shape[1:])))
        elif key.endswith(("bn.weight", "bn.running_var")):
            out[key] = rng.uniform(0.5, 1.5, size=shape).astype(np.float32)
        elif key == "fc.weight":
            out[key] = rng.standard_normal(shape, dtype=np.float32) * np.float32(1 / math.sqrt(2048))
        else:
            out[key] = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.1 if "bn." in key else 0.01)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch_net = TorchFIDInception().eval()
    shapes = sorted((k, tuple(v.shape)) for k, v in torch_net.state_dict().items() if "num_batches_tracked" not in k)
    state_dict = recipe_state_dict(shapes)
    torch_net.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict.items()}, strict=False)
    module, params = from_torch("inception_fid", {}, state_dict)
    params = jax.device_put(params)

    rng = np.random.default_rng(0)
    x_nhwc = rng.uniform(-1, 1, size=(args.batch, 299, 299, 3)).astype(np.float32)
    x_nchw = torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))
    images_256 = jnp.asarray(rng.integers(0, 256, size=(args.batch, 256, 256, 3)).astype(np.uint8))

    jax_net = jax.jit(lambda p, x: module.apply({"params": p}, x)["pool3"])
    jax_adm = jax.jit(lambda p, im: module.apply({"params": p}, adm_inception_input(im))["pool3"])

    def run_torch():
        with torch.inference_mode():
            return torch_net(x_nchw).numpy()

    pool_jax = np.asarray(jax_net(params, x_nhwc))
    pool_torch = run_torch()
    rel = float(np.abs(pool_jax - pool_torch).max() / np.abs(pool_torch).max())
    jax.block_until_ready(jax_adm(params, images_256))

    times = {"jax": [], "jax_adm": [], "torch": []}
    for _ in range(args.rounds):  # interleaved: the machine's load hits every row alike
        for name, fn in (("jax", lambda: jax_net(params, x_nhwc)), ("jax_adm", lambda: jax_adm(params, images_256)),
                         ("torch", run_torch)):
            start = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - start)

    label = {"jax": "jaxlab Flax (jit), 299x299 input", "jax_adm": "jaxlab Flax + ADM resize 256->299 (jit)",
             "torch": f"PyTorch {torch.__version__} nn rebuild of pytorch-fid ({torch.get_num_threads()} threads)"}
    rows = []
    for name, ts in times.items():
        median = statistics.median(ts)
        rows.append({"implementation": label[name], "batch": args.batch, "median_s": f"{median:.2f}",
                     "images_per_s": f"{args.batch / median:.1f}"})
    print(f"FID Inception forward on {jax.devices()[0].platform} ({args.rounds} interleaved rounds); "
          f"pool3 max |jax - torch| / max |torch| = {rel:.2e}")
    print_table(rows, list(rows[0]))


if __name__ == "__main__":
    main()
