"""Collects the figures of a pipeline run (accuracies after SFT and after RL, expert load
balance with and without the bias updates, timings) from its checkpoints into one JSON."""
import json
import sys

import torch


def log_of(path):
    return torch.load(path, map_location="cpu", weights_only=False)["log"]


def main():
    out = sys.argv[1]
    sft, abl, rl = log_of(out + "/sft.pt"), log_of(out + "/sft_nobias.pt"), log_of(out + "/rl.pt")
    print(json.dumps({
        "config": sft["config"],
        "sft": {"steps": sft["steps_done"], "batch": sft["args"]["batch"], "seconds": sft["train_seconds"],
                "accuracy": sft.get("accuracy")},
        "rl": {"steps": rl["steps_done"], "prompts_x_group": [rl["args"]["prompts"], rl["args"]["group"]],
               "seconds": rl["train_seconds"], "accuracy": rl.get("accuracy")},
        "load_balance_max_over_mean": {
            "with_bias_updates": sft.get("load_balance_at"),
            "without_bias_updates": {"step": abl["steps_done"], "max_over_mean": abl["load_balance"]},
            "with_bias_updates_end_of_sft": sft["load_balance"],
            "after_rl": rl["load_balance"]},
    }, indent=1))


if __name__ == "__main__":
    main()
