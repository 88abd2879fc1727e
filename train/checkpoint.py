"""Checkpoints: model weights (with the MoE selection biases), config, tokenizer, and a log."""
import torch

from model import Config, Transformer
from tokenizer import Tokenizer


def save(path, model, tok, log):
    torch.save({"config": model.cfg.to_dict(), "state": model.state_dict(),
                "tokenizer": {"tokens": tok.tokens, "merges": tok.merges, "types": tok.types},
                "log": log}, path)


def load(path):
    d = torch.load(path, map_location="cpu", weights_only=False)
    model = Transformer(Config(**d["config"]))
    model.load_state_dict(d["state"])
    t = d["tokenizer"]
    return model, Tokenizer(t["tokens"], t["merges"], t["types"]), d.get("log", {})
