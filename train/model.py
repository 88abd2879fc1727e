"""DeepSeek-V3 architecture at toy scale, in PyTorch, computing exactly what
docs/deepseek-semantics.md states (and so what edgeseek computes from the exported GGUF):

- MLA: q = Wq_b RMSNorm_q(Wq_a x), per head [nope | rope]; Wkv_a x = [latent c | k_pe];
  ĉ = RMSNorm_kv(c); W_UK, W_UV from Wkv_b viewed as [H][dn+dv][R]; scale (dn+dr)^-1/2
  (no YaRN: context_length stays below any original_seq_len, so m = 1).
- RoPE interleaved on pairs (2i, 2i+1), f_i = theta^(-2i/dr) in fp32, angle t*f_i in fp32.
- Layer 0 dense MLP, later layers MoE: sigmoid scores, bias (exp_probs_b) for selection only,
  groups scored by the sum of their top-2 biased scores, top-k inside the kept groups,
  weights = unbiased scores renormalised times route_scale, plus one shared expert.
- RMSNorm eps 1e-6 everywhere, silu on W1 (gate), untied head, no embedding scale.

Two forward paths: forward() over whole sequences (training, teacher forcing) and step()
with a latent KV cache (sampling for RL and evaluation) — the cache holds ĉ and the rotated
k_pe, as the C runtime's does.
"""
from dataclasses import dataclass, asdict

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class Config:
    vocab_size: int = 512
    dim: int = 192
    inter_dim: int = 512        # dense MLP of the leading layer(s)
    moe_inter_dim: int = 128    # each routed expert; the shared expert uses n_shared * this
    n_layers: int = 4
    n_dense_layers: int = 1
    n_heads: int = 4
    q_lora_rank: int = 96
    kv_lora_rank: int = 64
    qk_nope_head_dim: int = 32
    qk_rope_head_dim: int = 16
    v_head_dim: int = 32
    n_routed_experts: int = 16
    n_shared_experts: int = 1
    n_activated_experts: int = 4
    n_expert_groups: int = 4
    n_limited_groups: int = 2
    route_scale: float = 2.5
    rope_theta: float = 10000.0
    max_seq_len: int = 512
    eps: float = 1e-6

    def to_dict(self):
        return asdict(self)


class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


def rope_tables(cfg, positions, dtype):
    """cos/sin [T, dr/2] for absolute positions (fp32 frequencies and angles, as the reference)."""
    dr = cfg.qk_rope_head_dim
    f = cfg.rope_theta ** (-torch.arange(0, dr, 2, dtype=torch.float32, device=positions.device) / dr)
    ang = positions.to(torch.float32)[:, None] * f[None, :]
    return torch.cos(ang).to(dtype), torch.sin(ang).to(dtype)


def apply_rope(x, cos, sin):
    """x [..., T, (heads,) dr] interleaved pairs; cos/sin [T, dr/2] broadcast over heads."""
    xp = x.reshape(*x.shape[:-1], -1, 2)
    x0, x1 = xp[..., 0], xp[..., 1]
    return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)


class MLA(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        H, dn, dr, dv, R = cfg.n_heads, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim, cfg.kv_lora_rank
        self.wq_a = nn.Linear(cfg.dim, cfg.q_lora_rank, bias=False)
        self.q_norm = RMSNorm(cfg.q_lora_rank, cfg.eps)
        self.wq_b = nn.Linear(cfg.q_lora_rank, H * (dn + dr), bias=False)
        self.wkv_a = nn.Linear(cfg.dim, R + dr, bias=False)
        self.kv_norm = RMSNorm(R, cfg.eps)
        self.wkv_b = nn.Linear(R, H * (dn + dv), bias=False)
        self.wo = nn.Linear(H * dv, cfg.dim, bias=False)
        self.scale = (dn + dr) ** -0.5

    def project(self, x, cos, sin):
        """x [B,T,dim] -> q_nope [B,T,H,dn], q_pe (rotated) [B,T,H,dr], ĉ [B,T,R], k_pe [B,T,dr]."""
        c = self.cfg
        B, T, _ = x.shape
        q = self.wq_b(self.q_norm(self.wq_a(x))).view(B, T, c.n_heads, c.qk_nope_head_dim + c.qk_rope_head_dim)
        q_nope, q_pe = q.split([c.qk_nope_head_dim, c.qk_rope_head_dim], dim=-1)
        kv = self.wkv_a(x)
        lat, k_pe = kv.split([c.kv_lora_rank, c.qk_rope_head_dim], dim=-1)
        q_pe = apply_rope(q_pe, cos[:, None, :], sin[:, None, :])
        k_pe = apply_rope(k_pe, cos, sin)
        return q_nope, q_pe, self.kv_norm(lat), k_pe

    def attend(self, q_nope, q_pe, lat, k_pe, mask):
        """Naive (non-absorbed) form over cached latents lat [B,S,R], k_pe [B,S,dr]."""
        c = self.cfg
        B, T = q_nope.shape[:2]
        S = lat.shape[1]
        kvb = self.wkv_b(lat).view(B, S, c.n_heads, c.qk_nope_head_dim + c.v_head_dim)
        k_nope, v = kvb.split([c.qk_nope_head_dim, c.v_head_dim], dim=-1)
        scores = (torch.einsum("bthd,bshd->bhts", q_nope, k_nope) +
                  torch.einsum("bthd,bsd->bhts", q_pe, k_pe)) * self.scale
        scores = scores + mask
        p = torch.softmax(scores.float(), dim=-1).type_as(q_nope)
        o = torch.einsum("bhts,bshd->bthd", p, v).reshape(B, T, c.n_heads * c.v_head_dim)
        return self.wo(o)

    def forward(self, x, cos, sin, mask, cache=None):
        q_nope, q_pe, lat, k_pe = self.project(x, cos, sin)
        if cache is not None:  # cache = [lat, k_pe] tensors with the past, appended in place
            if cache[0] is not None:
                lat = torch.cat([cache[0], lat], dim=1)
                k_pe = torch.cat([cache[1], k_pe], dim=1)
            cache[0], cache[1] = lat, k_pe
        return self.attend(q_nope, q_pe, lat, k_pe, mask)


class MLP(nn.Module):
    def __init__(self, dim, inter):
        super().__init__()
        self.w1 = nn.Linear(dim, inter, bias=False)
        self.w2 = nn.Linear(inter, dim, bias=False)
        self.w3 = nn.Linear(dim, inter, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class MoE(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        E = cfg.n_routed_experts
        self.gate = nn.Linear(cfg.dim, E, bias=False)
        # the selection bias: not a trained parameter, updated by the load-balancing rule
        self.register_buffer("bias", torch.zeros(E))
        self.experts = nn.ModuleList([MLP(cfg.dim, cfg.moe_inter_dim) for _ in range(E)])
        self.shared = MLP(cfg.dim, cfg.n_shared_experts * cfg.moe_inter_dim)
        self.last_idx = None  # the experts chosen in the last forward, for the load statistics

    def route(self, x):
        c = self.cfg
        N = x.shape[0]
        s = torch.sigmoid(F.linear(x.float(), self.gate.weight.float()))
        sc = s + self.bias
        G = c.n_expert_groups
        if G > 1:
            gs = sc.detach().view(N, G, -1).topk(2, dim=-1).values.sum(-1)
            keep = gs.topk(c.n_limited_groups, dim=-1).indices
            gmask = torch.ones(N, G, dtype=torch.bool, device=x.device).scatter_(1, keep, False)
            sc = sc.detach().masked_fill(gmask.repeat_interleave(c.n_routed_experts // G, dim=1), float("-inf"))
        idx = sc.detach().topk(c.n_activated_experts, dim=-1).indices
        w = s.gather(1, idx)
        w = w / w.sum(-1, keepdim=True) * c.route_scale
        return idx, w.type_as(x)

    def forward(self, x):
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        idx, w = self.route(x)
        self.last_idx = idx
        y = self.shared(x)
        flat = idx.flatten()
        order = flat.argsort()
        counts = torch.bincount(flat, minlength=self.cfg.n_routed_experts).tolist()
        tok = (order // self.cfg.n_activated_experts)
        wts = w.flatten()[order]
        start = 0
        outs = torch.zeros_like(x)
        for e, n in enumerate(counts):
            if n == 0:
                continue
            t = tok[start:start + n]
            outs.index_add_(0, t, self.experts[e](x[t]) * wts[start:start + n, None])
            start += n
        return (y + outs).view(shape)


class Block(nn.Module):
    def __init__(self, cfg, layer):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.dim, cfg.eps)
        self.attn = MLA(cfg)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.eps)
        self.ffn = MLP(cfg.dim, cfg.inter_dim) if layer < cfg.n_dense_layers else MoE(cfg)

    def forward(self, x, cos, sin, mask, cache=None):
        x = x + self.attn(self.attn_norm(x), cos, sin, mask, cache)
        return x + self.ffn(self.ffn_norm(x))


class Transformer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList([Block(cfg, i) for i in range(cfg.n_layers)])
        self.norm = RMSNorm(cfg.dim, cfg.eps)
        self.head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def moe_layers(self):
        return [l.ffn for l in self.layers if isinstance(l.ffn, MoE)]

    def forward(self, tokens):
        """tokens [B,T] from position 0 -> logits [B,T,V]."""
        return self.head(self.norm(self.hidden(tokens)))

    def hidden(self, tokens):
        """tokens [B,T] from position 0 -> the last layer's output before the final norm
        [B,T,dim] (what the MTP module of mtp.py reads)."""
        B, T = tokens.shape
        dtype = self.embed.weight.dtype
        dev = tokens.device
        cos, sin = rope_tables(self.cfg, torch.arange(T, device=dev), dtype)
        mask = torch.full((T, T), float("-inf"), device=dev).triu(1).to(dtype)
        h = self.embed(tokens)
        for layer in self.layers:
            h = layer(h, cos, sin, mask)
        return h

    def new_cache(self):
        return [[None, None] for _ in self.layers]

    def step(self, tokens, pos, cache):
        """tokens [B,T] at positions pos..pos+T-1, appending to cache -> logits [B,T,V]."""
        B, T = tokens.shape
        dtype = self.embed.weight.dtype
        dev = tokens.device
        cos, sin = rope_tables(self.cfg, torch.arange(pos, pos + T, device=dev), dtype)
        mask = torch.full((T, pos + T), float("-inf"), device=dev).triu(pos + 1).to(dtype)
        h = self.embed(tokens)
        for layer, c in zip(self.layers, cache):
            h = layer(h, cos, sin, mask, c)
        return self.head(self.norm(h))


def count_params(model):
    total = sum(p.numel() for p in model.parameters())
    cfg = model.cfg
    per_expert = 3 * cfg.dim * cfg.moe_inter_dim
    n_moe = cfg.n_layers - cfg.n_dense_layers
    inactive = n_moe * (cfg.n_routed_experts - cfg.n_activated_experts) * per_expert
    return total, total - inactive
