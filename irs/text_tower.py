"""The query's text tower: open_clip's, run on the query's tokens only, and its bf16 and int8 copies (the
text_dtype setting).

int8: a query's text tower on a CPU is bound by reading its weights (ViT-B-32's are 150 MB in float32) and by the
float matrix products of ~10 tokens. Here every linear layer (the attention's input and output projections
and the MLP) keeps its weights in int8, one scale per output channel, and quantises its input to 8 bits at
run time (PyTorch's dynamic quantisation kernels: fbgemm on x86, qnnpack on ARM). The attention itself, the
layer norms, the embeddings and the final projection stay float32. Query vectors move by about 1e-3 in
cosine; the image tower and the stored vectors are untouched.

The input's scale is one per call, over every token in it, so a text's vector would depend on the texts
batched with it: `encode_text_int8` encodes texts one at a time, so a text always gets the same vector.
"""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F


def can_truncate_text(model: torch.nn.Module) -> bool:
    """Whether `encode_text_truncated` gives this model's `encode_text` vectors: an open_clip CLIP whose text
    tower is causal (each position attends only to earlier ones) and pools the end-of-text token (argmax).
    Other towers (CustomTextCLIP, HF text models, bidirectional masks) keep the stock path."""
    needed = ("transformer", "token_embedding", "positional_embedding", "ln_final", "attn_mask")
    if not all(hasattr(model, name) for name in needed) or getattr(model, "text_pool_type", None) != "argmax":
        return False
    mask = model.attn_mask
    if not isinstance(mask, torch.Tensor) or mask.ndim != 2 or mask.shape[0] != mask.shape[1]:
        return False
    causal = torch.full(mask.shape, float("-inf"), device=mask.device).triu_(1)
    return bool(torch.equal(mask.float(), causal)) and mask.shape[0] == model.positional_embedding.shape[0]


TEXT_PARTS = ("transformer", "token_embedding", "positional_embedding", "ln_final", "text_projection", "attn_mask")


def text_tower_copy(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """A copy of an open_clip CLIP's text tower alone, in `dtype`: what `encode_text_truncated` reads."""
    tower = torch.nn.Module()
    for name in TEXT_PARTS:
        part = getattr(model, name)
        if isinstance(part, torch.Tensor):  # parameters too: nothing trains this copy
            tower.register_buffer(name, part.detach().to(dtype, copy=True))
        else:
            setattr(tower, name, None if part is None else copy.deepcopy(part).to(dtype))
    return tower.eval()


def encode_text_truncated(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """open_clip CLIP.encode_text run on the first L token positions only, L = the last end-of-text position
    in the batch + 1 (a query is ~10 tokens of the 77). With a causal mask the output at the end-of-text
    token depends only on the tokens before it, so the padding after it changes nothing: the same vectors
    at a fraction of the work. Only for models `can_truncate_text` accepts."""
    eot = tokens.argmax(dim=-1)  # open_clip's argmax pooling: the end-of-text token has the highest id
    length = int(eot.max()) + 1
    tokens = tokens[:, :length]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype) + model.positional_embedding[:length].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)
    x = x[torch.arange(x.shape[0], device=x.device), eot]
    projection = model.text_projection
    if projection is None:
        return x
    return projection(x) if isinstance(projection, torch.nn.Linear) else x @ projection


class Int8Linear(torch.nn.Module):
    """y = x W^T + b with W in int8 (symmetric, per output channel) and x quantised per call."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, reduce_range: bool) -> None:
        super().__init__()
        w = weight.detach().float().cpu()
        scales = (w.abs().amax(dim=1).clamp_min(1e-12) / 127).double()
        with warnings.catch_warnings():  # quantised tensors are deprecated, the kernels still the fast path
            warnings.filterwarnings("ignore", message=".*quantize_per_channel.*", category=UserWarning)
            q = torch.quantize_per_channel(w, scales, torch.zeros(len(scales), dtype=torch.long), 0, torch.qint8)
        self._packed = torch.ops.quantized.linear_prepack(q, None if bias is None else bias.detach().float().cpu())
        self._reduce_range = reduce_range
        self.int8_original_dtype = torch.float32  # what open_clip's get_cast_dtype reads on an int8 layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic(x, self._packed, self._reduce_range)


class Int8SelfAttention(torch.nn.Module):
    """Stands in for a text block's nn.MultiheadAttention (self-attention only, same call and return)."""

    def __init__(self, attention: torch.nn.MultiheadAttention, reduce_range: bool) -> None:
        super().__init__()
        self.heads = attention.num_heads
        self.batch_first = attention.batch_first
        self.qkv = Int8Linear(attention.in_proj_weight, attention.in_proj_bias, reduce_range)
        self.out = Int8Linear(attention.out_proj.weight, attention.out_proj.bias, reduce_range)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        need_weights: bool = False,
        attn_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, None]:
        x = query if self.batch_first else query.transpose(0, 1)
        batch, length, width = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        y = self.out(y.transpose(1, 2).reshape(batch, length, width))
        return (y if self.batch_first else y.transpose(0, 1)), None


def can_quantize_text(model: torch.nn.Module) -> bool:
    """Whether `int8_text_tower` can copy this tower: every block an open_clip ResidualAttentionBlock with
    plain self-attention (one input projection with biases, no added key/value positions) and a c_fc/c_proj
    MLP."""
    blocks = getattr(getattr(model, "transformer", None), "resblocks", None)
    if blocks is None or len(blocks) == 0:
        return False
    for block in blocks:
        attn, mlp = getattr(block, "attn", None), getattr(block, "mlp", None)
        if not isinstance(attn, torch.nn.MultiheadAttention) or hasattr(block, "ln_1_kv"):
            return False
        if attn.in_proj_weight is None or attn.in_proj_bias is None:  # separate q/k/v weights, or no biases
            return False
        if attn.bias_k is not None or attn.add_zero_attn:  # extra key/value positions the copy does not add
            return False
        if not all(isinstance(getattr(mlp, name, None), torch.nn.Linear) for name in ("c_fc", "c_proj")):
            return False
    return True


def int8_text_tower(model: torch.nn.Module) -> torch.nn.Module:
    """A CPU copy of an open_clip CLIP's text tower with int8 linear layers (the model is not changed).
    Raises what PyTorch raises where its quantised kernels are missing."""
    # without VNNI, x86 kernels sum pairs of u8 x s8 products in int16: 7-bit inputs cannot overflow it
    reduce_range = not _cpu_has_vnni()
    tower = text_tower_copy(model, torch.float32).cpu()
    for block in tower.transformer.resblocks:
        block.attn = Int8SelfAttention(block.attn, reduce_range)
        block.mlp.c_fc = Int8Linear(block.mlp.c_fc.weight, block.mlp.c_fc.bias, reduce_range)
        block.mlp.c_proj = Int8Linear(block.mlp.c_proj.weight, block.mlp.c_proj.bias, reduce_range)
    return tower.eval()


def encode_text_int8(tower: torch.nn.Module, tokens: torch.Tensor, threads: int) -> torch.Tensor:
    """`encode_text_truncated` through an int8 tower, one text at a time (see the module doc), on one thread:
    a ~10-token text is ~100 small kernels, and with irs's sleeping OpenMP threads (OMP_WAIT_POLICY=PASSIVE)
    waking a second thread for each costs more than it saves (ViT-B-32, two texts: 12 ms on one thread, 21 on
    two; the two texts on two threads side by side: 13 ms, as Python's dispatch of the small kernels is
    serial). `threads`: the process's thread count, restored after."""
    with one_thread(threads):
        return torch.cat([encode_text_truncated(tower, row[None]) for row in tokens.cpu()])


@contextmanager
def one_thread(restore: int) -> Iterator[None]:
    """torch on one intra-op thread inside `with` for the calling thread, and `restore` threads after. torch
    keeps the OpenMP count per thread, so other threads' work is not slowed, but it also keeps a process-wide
    count that threads started later begin with; `restore` is a fixed count, not one read here, because a
    thread that began while another was inside would read 1 and leave it."""
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(restore)


def _cpu_has_vnni(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU has x86 VNNI (int8 dot products summed in int32). False where it cannot be told."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    return re.search(r"\b(avx512_vnni|avx_vnni|amx_int8)\b", text) is not None
