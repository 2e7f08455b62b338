"""A tiny data-parallel regression under paddle.distributed.launch, logging ppdet-style step lines and, at the
end, a digest of its parameters (identical on every rank and node when the collective works)."""

import hashlib
import sys
import time

import numpy as np
import paddle
import paddle.distributed as dist

dist.init_parallel_env()
rank, world = dist.get_rank(), dist.get_world_size()
paddle.seed(0)
model = paddle.DataParallel(paddle.nn.Linear(8, 1)) if world > 1 else paddle.nn.Linear(8, 1)
opt = paddle.optimizer.SGD(learning_rate=0.05, parameters=model.parameters())
rng = np.random.default_rng(rank)
steps = int(sys.argv[1]) if len(sys.argv) > 1 else 20
for step in range(steps):
    t0 = time.perf_counter()
    x = paddle.to_tensor(rng.normal(size=(16, 8)).astype("float32"))
    loss = ((model(x) - x.sum(axis=1, keepdim=True)) ** 2).mean()
    loss.backward()
    opt.step()
    opt.clear_grad()
    dt = time.perf_counter() - t0
    if rank == 0:
        print(f"Epoch: [0] [{step:2d}/{steps}] learning_rate: 0.050000 loss: {float(loss):.6f} eta: 0:00:01 "
              f"batch_cost: {dt:.4f} data_cost: 0.0001 ips: {16 / dt:.4f} images/s", flush=True)
digest = hashlib.sha256(b"".join(p.numpy().tobytes() for p in model.parameters())).hexdigest()[:16]
print(f"rank {rank}: params sha256 {digest}", flush=True)
