"""Run under torchrun: each rank computes its local gradient on its own toy frame
without DDP, then the DDP gradient; writes both (and the all-gathered DDP
gradients) for test_distributed.py / test_cuda.py to compare. DDP_BACKEND:
gloo (CPU, default) or nccl (one CUDA device per rank)."""
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import toy_scene  # noqa: E402
from test_detector import micro_model  # noqa: E402


def flat_grad(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in model.parameters()])


def main() -> None:
    backend = os.environ.get("DDP_BACKEND", "gloo")
    dist.init_process_group(backend)
    rank = dist.get_rank()
    device = torch.device("cpu")
    if backend == "nccl":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    model, rig = micro_model(seed=0)              # identical initial weights on every rank
    model.to(device).train()
    gen = torch.Generator().manual_seed(100 + rank)  # different data per rank
    inputs = toy_scene.frame(rig, 0.1 * rank, gen, torch.rand(1, rig.num_cameras, 3, 64, 128, generator=gen)).to(device)
    targets = [{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in toy_scene.targets_at(0.1 * rank).items()}]

    torch.manual_seed(7)
    sum(model(inputs, None, targets)["losses"].values()).backward()
    local = flat_grad(model)
    model.zero_grad(set_to_none=True)

    ddp = DistributedDataParallel(model, find_unused_parameters=True)
    torch.manual_seed(7)
    sum(ddp(inputs, None, targets)["losses"].values()).backward()
    averaged = flat_grad(model)
    gathered_local = [torch.zeros_like(local) for _ in range(dist.get_world_size())]
    gathered_ddp = [torch.zeros_like(averaged) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered_local, local)
    dist.all_gather(gathered_ddp, averaged)
    if rank == 0:
        torch.save({"local": torch.stack(gathered_local).cpu(), "ddp": torch.stack(gathered_ddp).cpu()},
                   os.environ["DDP_TEST_OUT"])
    dist.barrier()              # rank 0 hosts the store: nobody leaves while another still talks to it
    dist.destroy_process_group()
    # Leave without the interpreter's teardown: once (1 CI run in many, on a loaded 2-core
    # machine) a rank aborted there with "terminate called without an active exception"
    # (a gloo thread still joinable at exit) after its work was done and the results saved.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
