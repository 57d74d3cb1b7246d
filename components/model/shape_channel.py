"""Word shapes for a base model without token type ids (MPNet): a shape table of their own.

BERT takes word shapes in its token type table (components/data/word_shapes.py). MPNet has no such
table, and its forward drops a `token_type_ids` argument without a word. ShapeChannel gives it one:
each sub-token's shape embedding is added to its word embedding before the model's own embedding
layer (positions, LayerNorm) runs, which is where BERT adds its token type embedding. The table starts
at zero, so the wrapped model at first computes exactly what the base model does.

Called like the plain model (input_ids, attention_mask, token_type_ids = shapes), it trains, saves,
loads, exports (the ONNX graph takes token_type_ids) and serves as the BERT path does. A saved model
is the plain transformers model (loads as such, without its shapes) plus `word_shapes.safetensors`;
its config carries the word-shapes flag, so a directory that lost the table is refused, not served blind.
"""

from __future__ import annotations

from pathlib import Path

import torch

from components.data.word_shapes import CONFIG_FLAG, SHAPES, token_type_rows, uses_word_shapes
from components.model.wrapped import POSITIONS_AFTER_PADDING, WrappedModel

SHAPE_WEIGHTS = "word_shapes.safetensors"
_TABLE = "shape_embeddings"


class ShapeChannel(WrappedModel):
    """`model` reading word shapes through a table of its own; forward(input_ids, attention_mask,
    token_type_ids) returns the model's output."""

    def __init__(self, model, table: torch.Tensor | None = None):
        super().__init__(model)
        hidden = model.get_input_embeddings().embedding_dim
        self.shape_embeddings = torch.nn.Embedding(len(SHAPES), hidden)
        with torch.no_grad():
            if table is None:
                self.shape_embeddings.weight.zero_()
            else:
                self.shape_embeddings.weight.copy_(table)
        setattr(model.config, CONFIG_FLAG, True)

    @property
    def base_model(self):  # freezing and LoRA reach into it
        return self.model.base_model

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, **kwargs):
        if token_type_ids is None:  # as BERT reads a missing token_type_ids: all the first row (lower)
            token_type_ids = torch.zeros_like(input_ids)
        embeddings = self.model.get_input_embeddings()(input_ids)
        embeddings = embeddings + self.shape_embeddings(token_type_ids).to(embeddings.dtype)
        return self.model(inputs_embeds=embeddings, attention_mask=attention_mask,
                          position_ids=self._position_ids(input_ids), **kwargs)

    def _position_ids(self, input_ids: torch.Tensor) -> torch.Tensor | None:
        """The positions the model gives itself from input_ids, which it cannot see behind inputs_embeds:
        MPNet (like RoBERTa) numbers real tokens from pad_token_id + 1 and gives padding pad_token_id;
        from embeddings alone it would number every position, padding included, in a row."""
        if self.config.model_type not in POSITIONS_AFTER_PADDING:
            return None  # positions 0, 1, ... either way
        pad = int(self.config.pad_token_id)
        real = input_ids.ne(pad).long()
        return torch.cumsum(real, dim=1) * real + pad

    def save_pretrained(self, output_dir: Path | str) -> None:
        """The plain model (safetensors; its config flags the word shapes) and the table beside it."""
        from safetensors.torch import save_file

        output_dir = Path(output_dir)
        self.model.save_pretrained(output_dir)
        save_file({_TABLE: self.shape_embeddings.weight.detach().cpu().float().contiguous()},
                  str(output_dir / SHAPE_WEIGHTS))


def saved_shape_table(model_dir: Path | str) -> torch.Tensor | None:
    """The shape table saved beside a model, or None when there is none."""
    from safetensors.torch import load_file

    path = Path(model_dir) / SHAPE_WEIGHTS
    if not path.is_file():
        return None
    tensors = load_file(str(path))
    if set(tensors) != {_TABLE} or tensors[_TABLE].shape[0] != len(SHAPES):
        raise ValueError(f"{path}: expected one tensor {_TABLE!r} with {len(SHAPES)} rows (one per word shape), "
                         f"found {[(name, list(t.shape)) for name, t in tensors.items()]}")
    return tensors[_TABLE]


def load_shape_channel(model, model_dir: Path | str) -> ShapeChannel:
    """`model` (loaded from `model_dir`, which flags word shapes but has no token types) with its table."""
    table = saved_shape_table(model_dir)
    if table is None:
        raise ValueError(f"{model_dir}: config.json says the model reads word shapes ({CONFIG_FLAG}) and it has no "
                         f"token type table, but {SHAPE_WEIGHTS} is missing: the directory is incomplete")
    return ShapeChannel(model, table)


def add_word_shapes(model, source: Path | str | None = None):
    """`model` reading word shapes. A model with a token type table (BERT) gets one row per shape (a no-op
    when it has them, e.g. a champion); one without (MPNet) comes back as a ShapeChannel, with the table
    saved beside `source` (a champion's directory) when there is one, else a new table at zero."""
    embeddings = getattr(model.base_model, "embeddings", None)
    table = getattr(embeddings, "token_type_embeddings", None)
    if table is None or not token_type_rows(model.config):
        saved = saved_shape_table(source) if source is not None and Path(source).is_dir() else None
        return ShapeChannel(model, saved)
    if not uses_word_shapes(model.config) or table.num_embeddings < len(SHAPES):
        grown = torch.nn.Embedding(len(SHAPES), table.embedding_dim)
        with torch.no_grad():
            # Every shape starts as the pretrained single-segment type, so the model's outputs are
            # at first exactly the base model's; fine-tuning then learns what each shape adds.
            grown.weight.copy_(table.weight[0].expand(len(SHAPES), -1))
        embeddings.token_type_embeddings = grown
        model.config.type_vocab_size = len(SHAPES)
    setattr(model.config, CONFIG_FLAG, True)
    return model


def keep_shapes_trainable(model) -> None:
    """After the embeddings were frozen: the shape rows are new, they must learn. (A ShapeChannel's table
    is outside the embeddings, and freezing never reached it.)"""
    if uses_word_shapes(model.config) and not isinstance(model, ShapeChannel):
        model.base_model.embeddings.token_type_embeddings.requires_grad_(True)
