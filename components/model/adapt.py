"""Domain-adaptive pretraining: continue the base model's masked-language-model training on the
dataset's own unlabelled text before fine-tuning (Gururangan et al., 2020, "Don't stop pretraining").

Only the training split's text is used, so nothing of the validation or test rows leaks into the
model. The result is saved like any base model (safetensors + tokenizer) and fine-tuning starts
from it; the MLM head is dropped there.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from components.config import AdaptParams

if TYPE_CHECKING:
    from components.model.compute import Compute

ADAPT_CARD = "tunegate-adapt.json"


@dataclass(frozen=True)
class AdaptResult:
    enabled: bool
    base_model: str
    texts: int = 0
    epochs: int = 0
    steps: int = 0
    mlm_loss_first_epoch: float | None = None
    mlm_loss_last_epoch: float | None = None
    seconds: float = 0.0


def write_card(result: AdaptResult, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / ADAPT_CARD).write_text(json.dumps(asdict(result), indent=2) + "\n")


def read_card(out_dir: Path) -> AdaptResult | None:
    path = Path(out_dir) / ADAPT_CARD
    return AdaptResult(**json.loads(path.read_text())) if path.is_file() else None


def adapted_source(out_dir: Path) -> str | None:
    """The adapted model directory when the adapt stage trained one, else None (use the base)."""
    card = read_card(out_dir)
    return str(out_dir) if card is not None and card.enabled else None


def adapt_language_model(source: str, base_model: str, texts: list[str], params: AdaptParams, max_length: int,
                         out_dir: Path, compute: Compute | None = None) -> AdaptResult:
    # torch and transformers load here, not at import: the stage with adapt.enabled false only writes
    # its card, and importing torch for it cost every retraining about 5 s.
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModelForMaskedLM, DataCollatorForLanguageModeling

    from components.model.compute import resolve_compute
    from components.model.modeling import load_tokenizer

    random.seed(params.seed)
    torch.manual_seed(params.seed)
    tokenizer = load_tokenizer(source)
    # A sentence-embedding checkpoint has no MLM head: a fresh one is created (transformers reports it).
    model = AutoModelForMaskedLM.from_pretrained(source, trust_remote_code=False, use_safetensors=True)
    if params.max_examples is not None and params.max_examples < len(texts):
        texts = random.Random(params.seed).sample(texts, params.max_examples)
    encoded = tokenizer(texts, truncation=True, max_length=max_length, padding=False)["input_ids"]
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=params.mlm_probability, return_tensors="pt")
    compute = compute or resolve_compute("cpu", "fp32")
    model.to(compute.device)
    scaler = compute.grad_scaler()
    optimizer = torch.optim.AdamW(model.parameters(), lr=params.learning_rate)
    steps_per_epoch = math.ceil(len(encoded) / params.batch_size)
    losses, started, step = [], time.perf_counter(), 0
    model.train()
    for epoch in range(1, params.epochs + 1):
        order = list(range(len(encoded)))
        random.Random(f"{params.seed}:{epoch}").shuffle(order)
        total = 0.0
        progress = tqdm(range(steps_per_epoch), desc=f"adapt (MLM) epoch {epoch}/{params.epochs}", unit="batch")
        for batch_number in progress:
            rows = order[batch_number * params.batch_size:(batch_number + 1) * params.batch_size]
            batch = compute.batch(collator([{"input_ids": encoded[i]} for i in rows]))  # pads, masks 15%
            with compute.autocast():
                loss = model(**batch).loss
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            total += loss.item()
            step += 1
            progress.set_postfix(mlm_loss=f"{total / (batch_number + 1):.4f}")
        losses.append(total / max(steps_per_epoch, 1))
    out_dir.mkdir(parents=True, exist_ok=True)
    model.to("cpu")
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    result = AdaptResult(enabled=True, base_model=base_model, texts=len(encoded), epochs=params.epochs, steps=step,
                         mlm_loss_first_epoch=losses[0], mlm_loss_last_epoch=losses[-1],
                         seconds=time.perf_counter() - started)
    write_card(result, out_dir)
    return result
