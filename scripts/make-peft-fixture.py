#!/usr/bin/env python3
"""Writes tests/fixtures/peft/: a tiny random Llama saved by transformers, a LoRA adapter saved by
peft, and the losses and logits transformers computes for base + adapter and for the merged model.

The Rust test (tests/adapter.rs) loads both directories with our readers and must reproduce
those numbers, so the adapter format is checked against peft itself rather than against our own
writer. Needs torch, transformers, peft and safetensors (CPU is enough):

    python3 -m venv ~/.cache/longlora/peft-venv
    ~/.cache/longlora/peft-venv/bin/pip install torch transformers peft safetensors
    ~/.cache/longlora/peft-venv/bin/python scripts/make-peft-fixture.py
"""

import json
import pathlib

import peft
import torch
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "peft"
TOKENS = [1, 7, 3, 30, 12, 12, 5, 9, 28, 0, 17, 4, 22, 3, 8, 31, 2, 19, 11, 6]


def loss_and_logits(model, ids):
    with torch.no_grad():
        out = model(input_ids=ids, labels=ids)
    return out.loss.item(), out.logits[0].flatten().tolist()


def main():
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        torch_dtype="float32",
    )
    base = LlamaForCausalLM(config).float().eval()
    # Random norm weights, so that a reader which ignored them would fail the test.
    with torch.no_grad():
        for name, p in base.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
    base_dir = OUT / "base"
    base.save_pretrained(base_dir, safe_serialization=True)
    ids = torch.tensor([TOKENS])
    base_loss, _ = loss_and_logits(base, ids)

    lora = LoraConfig(
        r=2,
        lora_alpha=4,
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base, lora)
    # peft starts lora_B at zero (the adapter is a no-op); non-zero B makes it change the output.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.5 * torch.randn_like(p))
    model.eval()
    adapter_dir = OUT / "adapter"
    model.save_pretrained(adapter_dir)
    # peft writes a model card template; the fixture needs only the adapter files.
    (adapter_dir / "README.md").unlink()

    reloaded = PeftModel.from_pretrained(
        LlamaForCausalLM.from_pretrained(base_dir, torch_dtype=torch.float32), adapter_dir
    ).eval()
    adapter_loss, adapter_logits = loss_and_logits(reloaded, ids)
    merged = reloaded.merge_and_unload().eval()
    merged_loss, merged_logits = loss_and_logits(merged, ids)

    expected = {
        "tokens": TOKENS,
        "base_loss": base_loss,
        "adapter_loss": adapter_loss,
        "adapter_logits": adapter_logits,
        "merged_loss": merged_loss,
        "merged_logits": merged_logits,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
        },
    }
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"base loss {base_loss:.6f}, base+adapter {adapter_loss:.6f}, merged {merged_loss:.6f}")


if __name__ == "__main__":
    main()
