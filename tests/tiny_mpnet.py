"""A tiny MPNet built on the fly and saved like a user's model: the same layout as all-mpnet-base-v2
(MPNetTokenizerFast with <s>, </s>, <pad>, <unk>, <mask>, lowercasing WordPiece, no token type ids),
2 layers of hidden size 32."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tests.tiny import VOCAB_SIZE

# The real tokenizer's special ids: <s> 0, <pad> 1, </s> 2, <unk> 3 (and <mask> last).
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]


def build_tiny_mpnet_model(directory: Path, corpus: list[str]) -> Path:
    """Vocabulary as tests.tiny.build_tiny_base_model builds it (deterministic: specials, characters,
    continuation characters, the commonest words), with MPNet's specials and post-processor."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import MPNetConfig, MPNetModel, MPNetTokenizerFast

    torch.manual_seed(0)
    normalizer, pre_tokenizer = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    words = Counter(word for text in corpus
                    for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    characters = sorted({char for word in words for char in word})
    pieces = SPECIALS + characters + [f"##{char}" for char in characters]
    common = [word for word, _ in sorted(words.items(), key=lambda item: (-item[1], item[0])) if len(word) > 1]
    pieces += common[:max(0, VOCAB_SIZE - 1 - len(pieces))]
    pieces.append("<mask>")  # last, as in the real vocabulary
    tokenizer = Tokenizer(models.WordPiece({piece: i for i, piece in enumerate(pieces)}, unk_token="<unk>"))
    tokenizer.normalizer, tokenizer.pre_tokenizer = normalizer, pre_tokenizer
    bos, eos = tokenizer.token_to_id("<s>"), tokenizer.token_to_id("</s>")
    # The real tokenizer.json's post-processor: <s> A </s> (pairs <s> A </s></s> B </s>).
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", eos), ("<s>", bos), trim_offsets=True,
                                                            add_prefix_space=False)
    fast = MPNetTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                              cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
                              model_max_length=128)
    config = MPNetConfig(vocab_size=len(pieces), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=130,  # 128 positions after <pad>'s id
                         pad_token_id=fast.pad_token_id, bos_token_id=bos, eos_token_id=eos)
    directory.mkdir(parents=True, exist_ok=True)
    MPNetModel(config, add_pooling_layer=False).save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory
