"""The fast forms of the loaded models, as `engine.speed.Speed` asks for them.

`FastModels` turns the loaded models into the forms the loop calls. The stock modules are not replaced: the fast
forms are structural copies that share the original weights (no second copy in memory), so the text encoder and
the benchmark's plain reference loop keep using the stock modules. (channels_last changes the layout of the
decoder's weights, not their values.)

- CLIP's image tower: attention as one packed projection + `scaled_dot_product_attention` on contiguous
  (batch, tokens, width) tensors (torch's MultiheadAttention projects a transposed view, which becomes a slow
  batched matmul and an extra copy in the backward); the last block computed for the class token alone (the
  only token the embedding reads: 1/12 less work for ViT-B); the patch embedding as a matmul over unfolded
  patches (the backward of a stride-32 convolution is far slower than the same matmul on CPU).
- The decoder: channels_last on CUDA (the tensor cores' layout), optional gradient checkpointing of its
  up-sampling blocks for large images.
- Autocast to bf16 (or fp16 with a static loss scale) on CUDA, and to bf16 on a CPU that computes it natively;
  `torch.compile` of both, falling back to eager (once, with a log line) if compilation fails.
"""

from __future__ import annotations

import copy
import logging

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from engine.speed import FP16_LOSS_SCALE, Speed, cpu_bf16_flags

log = logging.getLogger(__name__)


def cpu_computes_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX tiles), as torch itself tells (its oneDNN kernels
    use them); the /proc/cpuinfo flags where this torch cannot say."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # a torch without these probes
        return bool(cpu_bf16_flags())


def autocast_dtype(speed: Speed, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of `speed` on `device`, or None for plain fp32. `auto` is bf16 on CUDA (fp16 where the
    GPU lacks bf16) and on a CPU that computes bf16 natively; fp32 on other CPUs, where bf16 is emulated and slower."""
    if speed.precision == "fp32":
        return None
    if speed.precision == "auto" and device.type != "cuda":
        return torch.bfloat16 if device.type == "cpu" and cpu_computes_bf16() else None
    if speed.precision == "fp16":
        return torch.float16
    if speed.precision == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def precision_reason(speed: Speed, device: torch.device) -> str:
    """The precision a run uses on `device` and why, in words for the start-up log and `python -m engine.models`."""
    dtype = autocast_dtype(speed, device)
    name = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
    if speed.precision != "auto":
        return f"{name} (IMAGINE_PRECISION={speed.precision})"
    if device.type == "cuda":
        return f"{name} (auto on CUDA)"
    if dtype is not None:
        flags = ", ".join(cpu_bf16_flags()) or "torch's oneDNN says so"
        return f"bf16 (auto: this CPU computes bf16 natively: {flags}; IMAGINE_PRECISION=fp32 forces fp32)"
    return f"fp32 (auto: this {device.type.upper()} has no native bf16 arithmetic)"


def loss_scale(speed: Speed, device: torch.device) -> float:
    """fp16 activations need the loss scaled up so that small gradients survive the backward."""
    return FP16_LOSS_SCALE if autocast_dtype(speed, device) is torch.float16 else 1.0


def shallow_module_copy(module: nn.Module) -> nn.Module:
    """A copy of `module`'s structure whose parameters and buffers are the original tensors (shared, not copied)."""
    memo = {id(t): t for t in module.parameters()}
    memo.update({id(t): t for t in module.buffers()})
    return copy.deepcopy(module, memo)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """`scaled_dot_product_attention`, in fp32 on the CPU whatever the autocast: there its bf16 kernel is slower than
    its fp32 one at CLIP's lengths (forward and backward at 32 x 12 heads x 50 tokens: 31 against 12 ms; at 197 tokens:
    126 against 108 ms, on an AVX512-BF16 CPU) and rounds the scores; the result comes back in the inputs' dtype."""
    if q.device.type == "cpu" and (q.dtype != torch.float32 or torch.is_autocast_enabled("cpu")):
        with torch.autocast("cpu", enabled=False):  # autocast would hand the kernel bf16 again
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float()).to(v.dtype)
    return F.scaled_dot_product_attention(q, k, v)


class PackedSelfAttention(nn.Module):
    """Self-attention with the weights of a batch-first `nn.MultiheadAttention` (no mask, q = k = v).

    Called like the original (`attn(x, x, x, need_weights=False, attn_mask=None)`) and returns `(out, None)`.
    """

    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        if not mha.batch_first or not mha._qkv_same_embed_dim or mha.in_proj_bias is None:
            raise ValueError("only batch-first self-attention with a packed in-projection and biases is supported")
        self.heads = mha.num_heads
        self.in_weight, self.in_bias = mha.in_proj_weight, mha.in_proj_bias
        self.out_proj = mha.out_proj

    def forward(self, query, key=None, value=None, need_weights=False, attn_mask=None):
        """Self-attention of `query` (N, L, E) with one packed projection and `scaled_dot_product_attention`; returns
        (out, None)."""
        if attn_mask is not None or (key is not None and key is not query):
            raise ValueError("PackedSelfAttention handles unmasked self-attention only")
        n, length, width = query.shape
        qkv = F.linear(query.contiguous(), self.in_weight, self.in_bias)  # (N, L, 3E)
        q, k, v = qkv.view(n, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        out = attention(q, k, v)  # (N, heads, L, head_dim)
        out = out.transpose(1, 2).reshape(n, length, width)
        return self.out_proj(out), None


class ClassTokenBlock(nn.Module):
    """The last residual block of a ViT whose output is read at the class token only: keys and values for every
    token, but the query, attention output and MLP for token 0 alone. Returns (N, 1, E), the same values the full
    block gives at token 0 (the other tokens' outputs are never read)."""

    def __init__(self, block: nn.Module, attn: PackedSelfAttention) -> None:
        super().__init__()
        self.block, self.attn = block, attn

    def forward(self, x: torch.Tensor, attn_mask=None) -> torch.Tensor:
        """The block's output at the class token only: (N, 1, E)."""
        if attn_mask is not None:
            raise ValueError("ClassTokenBlock handles unmasked self-attention only")
        block, attn = self.block, self.attn
        n, length, width = x.shape
        heads, head_dim = attn.heads, width // attn.heads
        h = block.ln_1(x).contiguous()
        w_q, w_kv = attn.in_weight[:width], attn.in_weight[width:]
        b_q, b_kv = attn.in_bias[:width], attn.in_bias[width:]
        q = F.linear(h[:, :1], w_q, b_q).view(n, 1, heads, head_dim).transpose(1, 2)
        k, v = F.linear(h, w_kv, b_kv).view(n, length, 2, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out = attention(q, k, v).transpose(1, 2).reshape(n, 1, width)
        y = x[:, :1] + block.ls_1(attn.out_proj(out))
        return y + block.ls_2(block.mlp(block.ln_2(y)))


class PatchEmbed(nn.Module):
    """A bias-free convolution whose kernel equals its stride (ViT's patch embedding), as one matmul."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if conv.kernel_size != conv.stride or conv.bias is not None or conv.padding not in ((0, 0), 0, "valid"):
            raise ValueError("not a patch embedding")
        self.conv = conv
        self.patch = conv.kernel_size[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution of (N, C, H, W) as one matmul over unfolded patches: (N, width, H/p, W/p)."""
        n, c, h, w = x.shape
        p = self.patch
        gh, gw = h // p, w // p
        patches = x.reshape(n, c, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5).reshape(n, gh * gw, c * p * p)
        weight = self.conv.weight.reshape(self.conv.out_channels, -1)
        out = patches @ weight.to(patches.dtype).T  # (N, gh*gw, width)
        return out.transpose(1, 2).reshape(n, -1, gh, gw)


def fast_image_tower(visual: nn.Module) -> nn.Module:
    """A copy of an open_clip VisionTransformer with packed attention and a matmul patch embedding."""
    fast = shallow_module_copy(visual)
    swapped = 0
    for block in getattr(getattr(fast, "transformer", None), "resblocks", []):
        attn = getattr(block, "attn", None)
        if isinstance(attn, nn.MultiheadAttention):
            try:
                block.attn = PackedSelfAttention(attn)
                swapped += 1
            except ValueError:
                pass
    reads_class_token_only = (
        getattr(fast, "pool_type", None) == "tok"
        and getattr(fast, "attn_pool", None) is None
        and not getattr(fast, "output_tokens", False)
    )
    blocks = getattr(getattr(fast, "transformer", None), "resblocks", None)
    if reads_class_token_only and blocks and isinstance(getattr(blocks[-1], "attn", None), PackedSelfAttention):
        blocks[-1] = ClassTokenBlock(blocks[-1], blocks[-1].attn)
    conv = getattr(fast, "conv1", None)
    if isinstance(conv, nn.Conv2d):
        try:
            fast.conv1 = PatchEmbed(conv)
        except ValueError:
            pass
    log.debug("fast CLIP image tower: %d attention blocks packed", swapped)
    return fast


class Checkpointed(nn.Module):
    """Recompute `inner` in the backward instead of keeping its activations."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, *args):
        """`inner(*args)`, checkpointed when gradients are enabled."""
        if not torch.is_grad_enabled():
            return self.inner(*args)
        return checkpoint(self.inner, *args, use_reentrant=False)


def checkpointed_decoder(decoder: nn.Module) -> nn.Module:
    """A copy of taming's Decoder whose up-sampling resnet blocks are recomputed in the backward."""
    fast = shallow_module_copy(decoder)
    for level in fast.up:
        for i, block in enumerate(level.block):
            level.block[i] = Checkpointed(block)
    return fast


class CompileOrEager:
    """`torch.compile(fn)`, used until it fails once; then `fn` itself, with one log line saying why."""

    def __init__(self, fn, name: str, **options) -> None:
        self.fn, self.name = fn, name
        self.compiled = torch.compile(fn, **options)
        self.failed = False

    def __call__(self, *args, **kwargs):
        if not self.failed:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as exc:  # compilation can fail on unusual toolchains; eager always works
                if isinstance(exc, torch.OutOfMemoryError):
                    raise
                self.failed = True
                log.warning(
                    "torch.compile of %s failed (%s: %s); running it eagerly",
                    self.name,
                    type(exc).__name__,
                    str(exc).splitlines()[0][:200] if str(exc) else "",
                )
        return self.fn(*args, **kwargs)


class FastModels:
    """What the loop calls: `decode(z_q)` -> image in about [-1, 1], `encode_image(x)` -> CLIP's raw image
    features, under the chosen precision."""

    def __init__(self, speed: Speed, device: torch.device, perceptor, vqgan=None) -> None:
        self.speed, self.device = speed, device
        self.dtype = autocast_dtype(speed, device)
        self.loss_scale = loss_scale(speed, device)
        self.channels_last = speed.channels_last and device.type == "cuda"
        visual = perceptor.model.visual
        self._visual = fast_image_tower(visual) if speed.fast_clip else visual
        self._decoder = None
        if vqgan is not None:
            decoder = checkpointed_decoder(vqgan.decoder) if speed.checkpoint else vqgan.decoder
            if self.channels_last:
                # memory_format is a property of the weight tensors: convert the (shared) weights once; the
                # stock modules compute the same values in either layout.
                vqgan.to(memory_format=torch.channels_last)
            self._decoder = decoder
            self._post_quant = vqgan.post_quant_conv
        self._visual_call = self._visual
        self._decoder_call = self._decoder
        if speed.compile:
            self._visual_call = CompileOrEager(self._visual, "CLIP's image tower")
            if self._decoder is not None:
                self._decoder_call = CompileOrEager(self._decoder, "the VQGAN decoder")

    def autocast(self):
        """An autocast context at the chosen dtype (disabled for fp32)."""
        return torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None)

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        """The VQGAN's post-quant convolution and (fast) decoder: image in about [-1, 1], in float32."""
        h = self._post_quant(z_q)
        if self.channels_last:
            h = h.contiguous(memory_format=torch.channels_last)
        return self._decoder_call(h).float()

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """CLIP's raw image features of `x` from the (fast) image tower, in float32."""
        return self._visual_call(x).float()
