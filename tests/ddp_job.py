"""The tiny training job under torchrun, one rank per process:

    python -m torch.distributed.run --standalone --nproc_per_node=2 -m tests.ddp_job BASE OUT CHECKPOINTS [KILL_AT]

Each rank trains (components.model.train under DDP) and writes OUT/rank<R>.json with a digest of its
final weights and its history; CHECKPOINTS is the checkpoint directory ("per-rank" gives each rank its
own, to show that only rank 0 writes one). With KILL_AT, rank 0 SIGKILLs itself after that step."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from tests.train_job import run


def weights_digest(model) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def main(base: Path, out: Path, checkpoints: str, kill_at: int | None) -> None:
    from components.model.distributed import launched_ranks

    ranks = launched_ranks()
    checkpoint_dir = out / f"checkpoints-rank{ranks.rank}" if checkpoints == "per-rank" else Path(checkpoints)
    # Batch 8 per rank: the global batch of 16 takes as many steps per epoch as the one-process test job.
    result, model = run(base, checkpoint_dir, kill_at_step=kill_at if ranks.is_main else None, epochs=3,
                        batch_size=8)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{ranks.rank}.json").write_text(json.dumps({
        "world_size": ranks.world_size, "digest": weights_digest(model), "best_score": result.best_score,
        "train_loss": [r.train_loss for r in result.history], "resumed_from_step": result.resumed_from_step}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else None)
