"""Writes a checkpoint as a llama.cpp-style `deepseek2` GGUF (v3), by hand (no gguf package).

Layout, as llama.cpp's converter writes DeepSeek-V3 (see tests/data/golden/*/model.gguf):
- Matrices F16 (or F32 with --f32); norms, the router (ffn_gate_inp) and the selection bias
  (exp_probs_b.bias) F32, so routing is computed from exactly the trained fp32 router.
- MLA up-projection split: attn_k_b [H][R][dn] (W_UK transposed per head) and attn_v_b
  [H][dv][R].  GGUF lists dims innermost first, so a torch shape [a, b, c] is ne [c, b, a].
- attention.key_length = kv_lora + rope, value_length = kv_lora (the latent-cache view),
  key_length_mla = nope + rope, value_length_mla = v_head_dim, head_count_kv = 1.
- No rope.scaling keys: context_length (max_seq_len) never exceeds an original context, so the
  model uses plain RoPE, attention scale (dn+dr)^-1/2.

Usage: export_gguf.py CKPT OUT.gguf [--f32]
"""
import argparse
import os
import struct

import numpy as np
import torch

import checkpoint

GGUF_ALIGN = 32
T_F32, T_F16 = 0, 1
VT_U32, VT_I32, VT_F32, VT_BOOL, VT_STR, VT_ARR = 4, 5, 6, 7, 8, 9

# The DeepSeek-V3 chat format as a Jinja template (llama.cpp detects it by its tokens).
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] + '\\n\\n' }}{% endif %}{% endfor %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '<｜User｜>' + message['content'] }}"
    "{% elif message['role'] == 'assistant' %}{{ '<｜Assistant｜>' + message['content'] + '<｜end▁of▁sentence｜>' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<｜Assistant｜>' }}{% endif %}")


def _str(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def _kv(key, vt, val):
    out = _str(key) + struct.pack("<I", vt)
    if vt == VT_U32:
        out += struct.pack("<I", val)
    elif vt == VT_F32:
        out += struct.pack("<f", val)
    elif vt == VT_BOOL:
        out += struct.pack("<?", val)
    elif vt == VT_STR:
        out += _str(val)
    elif vt == VT_ARR:
        et, items = val
        out += struct.pack("<IQ", et, len(items))
        if et == VT_STR:
            out += b"".join(_str(s) for s in items)
        elif et == VT_I32:
            out += struct.pack("<%di" % len(items), *items)
    return out


def block_tensors(cfg, i, l):
    """The tensors of block i (a model.Block): (name, tensor in llama.cpp's layout, keep-F32)."""
    H, dn, dv, R = cfg.n_heads, cfg.qk_nope_head_dim, cfg.v_head_dim, cfg.kv_lora_rank
    p = f"blk.{i}."
    a = l.attn
    kvb = a.wkv_b.weight.view(H, dn + dv, R)
    out = [(p + "attn_norm.weight", l.attn_norm.weight, True),
           (p + "attn_q_a.weight", a.wq_a.weight, False),
           (p + "attn_q_a_norm.weight", a.q_norm.weight, True),
           (p + "attn_q_b.weight", a.wq_b.weight, False),
           (p + "attn_kv_a_mqa.weight", a.wkv_a.weight, False),
           (p + "attn_kv_a_norm.weight", a.kv_norm.weight, True),
           (p + "attn_k_b.weight", kvb[:, :dn, :].transpose(1, 2), False),
           (p + "attn_v_b.weight", kvb[:, dn:, :], False),
           (p + "attn_output.weight", a.wo.weight, False),
           (p + "ffn_norm.weight", l.ffn_norm.weight, True)]
    f = l.ffn
    if i < cfg.n_dense_layers:
        out += [(p + "ffn_gate.weight", f.w1.weight, False),
                (p + "ffn_down.weight", f.w2.weight, False),
                (p + "ffn_up.weight", f.w3.weight, False)]
    else:
        out += [(p + "ffn_gate_inp.weight", f.gate.weight, True),
                (p + "exp_probs_b.bias", f.bias, True),
                (p + "ffn_gate_exps.weight", torch.stack([e.w1.weight for e in f.experts]), False),
                (p + "ffn_down_exps.weight", torch.stack([e.w2.weight for e in f.experts]), False),
                (p + "ffn_up_exps.weight", torch.stack([e.w3.weight for e in f.experts]), False),
                (p + "ffn_gate_shexp.weight", f.shared.w1.weight, False),
                (p + "ffn_down_shexp.weight", f.shared.w2.weight, False),
                (p + "ffn_up_shexp.weight", f.shared.w3.weight, False)]
    return out


def gguf_tensors(model):
    """(name, torch tensor in llama.cpp's layout (outermost first), keep-F32 flag)."""
    out = [("token_embd.weight", model.embed.weight, False)]
    for i, l in enumerate(model.layers):
        out += block_tensors(model.cfg, i, l)
    out += [("output_norm.weight", model.norm.weight, True), ("output.weight", model.head.weight, False)]
    return out


def tensor_bytes(t, keep32, f32=False):
    """(ne list, GGUF type, data bytes) of one tensor as written."""
    arr = t.detach().float().contiguous().numpy()
    ty = T_F32 if (keep32 or f32) else T_F16
    return list(reversed(arr.shape)), ty, arr.astype(np.float32 if ty == T_F32 else np.float16).tobytes()


def write_gguf(path, kvs, tensors):
    """kvs: serialised key/value entries; tensors: (name, ne, type, data bytes), in file order."""
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)) + b"".join(kvs)
    infos, off = b"", 0
    for name, ne, ty, data in tensors:
        infos += _str(name) + struct.pack("<I", len(ne)) + struct.pack("<%dQ" % len(ne), *ne)
        infos += struct.pack("<IQ", ty, off)
        off = (off + len(data) + GGUF_ALIGN - 1) // GGUF_ALIGN * GGUF_ALIGN
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:  # written whole, then renamed over the target
        f.write(head + infos)
        f.write(b"\0" * (-f.tell() % GGUF_ALIGN))
        for _, _, _, data in tensors:
            f.write(data)
            f.write(b"\0" * (-len(data) % GGUF_ALIGN))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def metadata(model, tok, f32):
    c = model.cfg
    A = "deepseek2."
    u = lambda k, v: _kv(k, VT_U32, int(v))
    kvs = [
        _kv("general.architecture", VT_STR, "deepseek2"),
        _kv("general.name", VT_STR, "edgeseek-default"),
        u("general.alignment", GGUF_ALIGN),
        u("general.file_type", 0 if f32 else 1),
        u(A + "vocab_size", c.vocab_size),
        u(A + "context_length", c.max_seq_len),
        u(A + "embedding_length", c.dim),
        u(A + "block_count", c.n_layers),
        u(A + "feed_forward_length", c.inter_dim),
        u(A + "leading_dense_block_count", c.n_dense_layers),
        u(A + "attention.head_count", c.n_heads),
        u(A + "attention.head_count_kv", 1),
        _kv(A + "attention.layer_norm_rms_epsilon", VT_F32, c.eps),
        u(A + "attention.q_lora_rank", c.q_lora_rank),
        u(A + "attention.kv_lora_rank", c.kv_lora_rank),
        u(A + "attention.key_length", c.kv_lora_rank + c.qk_rope_head_dim),
        u(A + "attention.value_length", c.kv_lora_rank),
        u(A + "attention.key_length_mla", c.qk_nope_head_dim + c.qk_rope_head_dim),
        u(A + "attention.value_length_mla", c.v_head_dim),
        u(A + "rope.dimension_count", c.qk_rope_head_dim),
        _kv(A + "rope.freq_base", VT_F32, c.rope_theta),
        u(A + "expert_count", c.n_routed_experts),
        u(A + "expert_used_count", c.n_activated_experts),
        u(A + "expert_shared_count", c.n_shared_experts),
        u(A + "expert_feed_forward_length", c.moe_inter_dim),
        _kv(A + "expert_weights_scale", VT_F32, c.route_scale),
        _kv(A + "expert_weights_norm", VT_BOOL, True),
        u(A + "expert_gating_func", 2),  # sigmoid
        u(A + "expert_group_count", c.n_expert_groups),
        u(A + "expert_group_used_count", c.n_limited_groups),
        _kv("tokenizer.ggml.model", VT_STR, "gpt2"),
        _kv("tokenizer.ggml.pre", VT_STR, "deepseek-v3"),
        _kv("tokenizer.ggml.tokens", VT_ARR, (VT_STR, tok.tokens)),
        _kv("tokenizer.ggml.token_type", VT_ARR, (VT_I32, tok.types)),
        _kv("tokenizer.ggml.merges", VT_ARR, (VT_STR, tok.merges)),
        u("tokenizer.ggml.bos_token_id", tok.bos),
        u("tokenizer.ggml.eos_token_id", tok.eos),
        u("tokenizer.ggml.padding_token_id", tok.pad),
        _kv("tokenizer.ggml.add_bos_token", VT_BOOL, True),
        _kv("tokenizer.ggml.add_eos_token", VT_BOOL, False),
        _kv("tokenizer.chat_template", VT_STR, CHAT_TEMPLATE),
    ]
    return kvs


def export(model, tok, path, f32=False):
    tensors = [(name, *tensor_bytes(t, keep32, f32)) for name, t, keep32 in gguf_tensors(model)]
    write_gguf(path, metadata(model, tok, f32), tensors)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ckpt")
    ap.add_argument("out")
    ap.add_argument("--f32", action="store_true", help="all tensors F32")
    a = ap.parse_args()
    model, tok, _ = checkpoint.load(a.ckpt)
    export(model, tok, a.out, a.f32)
    print("wrote", a.out)


if __name__ == "__main__":
    main()
