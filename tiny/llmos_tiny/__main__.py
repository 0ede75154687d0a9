"""``python -m llmos_tiny build --out DIR [--steps N] [--size default|large|test]``: rebuild llmos-tiny.

``python -m llmos_tiny smol --out DIR`` builds llmos-smol, the LoRA fine-tune of SmolLM2 (see
:mod:`llmos_tiny.smol_train`), and prints its build record as JSON.

``python -m llmos_tiny probe DIR`` prints whether a checkpoint copies (see
:mod:`llmos_tiny.probe`), as JSON.

``build`` regenerates the curriculum, trains the tokenizer and the model (resuming from
``DIR/checkpoint.pt`` if present), exports ``DIR/llmos-tiny.gguf`` and checks
PyTorch/llama.cpp parity on a few prompts. Not covered: copying the result into the
package (do that by hand once the model is worth shipping).
"""

from __future__ import annotations

import argparse
import json


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m llmos_tiny")
    commands = parser.add_subparsers(dest="command", required=True)
    build_cmd = commands.add_parser("build", help="train and export llmos-tiny from scratch")
    build_cmd.add_argument("--out", required=True)
    build_cmd.add_argument("--size", default="default", choices=["default", "large", "test"])
    # the defaults are the bundled model's recipe
    build_cmd.add_argument("--steps", type=int, default=4000)
    build_cmd.add_argument("--copy-steps", type=int, default=0, help="copy warm-up steps (part of --steps)")
    build_cmd.add_argument("--copy-every", type=int, default=3, help="then every Nth step is a copy batch too")
    build_cmd.add_argument("--copy-length", type=int, default=2048, help="tokens in a copy-drill row")
    build_cmd.add_argument("--copy-weight", type=float, default=1.0, help="weight of targets that copy the context")
    build_cmd.add_argument(
        "--split-spaces",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="tokenizer: a space joins only lower-case words",
    )
    build_cmd.add_argument(
        "--plant-induction",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="start from a written-in induction circuit (tiny/llmos_tiny/circuits.py; default size only)",
    )
    build_cmd.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="train with bfloat16 autocast (1.4x faster on CPU; the export is float32 either way)",
    )
    build_cmd.add_argument("--max-len", type=int, default=3600, help="longest training conversation, in tokens")
    build_cmd.add_argument("--batch-size", type=int, default=6)
    build_cmd.add_argument("--batch-tokens", type=int, default=8192, help="fill a batch up to this many tokens")
    build_cmd.add_argument("--lr", type=float, default=3e-3)
    build_cmd.add_argument("--max-minutes", type=float, default=0.0, help="stop training after this long")
    build_cmd.add_argument("--threads", type=int, default=2)
    build_cmd.add_argument("--device", default="cpu", help="torch device to train on: cpu, cuda")
    build_cmd.add_argument(
        "--stop-after",
        choices=["data", "training"],
        help="stop after the curriculum is encoded (data.pt), or after training (no export, no parity)",
    )
    build_cmd.add_argument("--conversations", type=int, default=0, help="training conversations (0: the size's)")
    build_cmd.add_argument("--seed", type=int, default=0)
    build_cmd.add_argument(
        "--init-from",
        default="",
        help="fine-tune: start from another build folder's weights (its tokenizer and shape; fresh schedule)",
    )
    smol_cmd = commands.add_parser("smol", help="fine-tune llmos-smol (LoRA over SmolLM2-135M-Instruct)")
    smol_cmd.add_argument("--out", required=True)
    smol_cmd.add_argument("--conversations", type=int, default=400)
    smol_cmd.add_argument("--seed", type=int, default=25)
    smol_cmd.add_argument("--rank", type=int, default=16)
    smol_cmd.add_argument("--lr", type=float, default=1e-3)
    smol_cmd.add_argument("--max-tokens", type=int, default=4096, help="clip each conversation to this many tokens")
    smol_cmd.add_argument("--batch-tokens", type=int, default=2048, help="trained-on tokens per optimizer step")
    smol_cmd.add_argument("--max-minutes", type=float, default=0.0, help="stop training after this long")
    smol_cmd.add_argument("--device", default="auto", help="auto (cuda when there is one), cpu or cuda")
    smol_cmd.add_argument("--threads", type=int, default=2)
    smol_cmd.add_argument("--init-from", default="", help="start from this LoRA GGUF (same rank; fresh schedule)")
    probe_cmd = commands.add_parser("probe", help="does a checkpoint copy? (teacher-forced, JSON)")
    probe_cmd.add_argument("folder", help="a build folder: checkpoint.pt and tokenizer.json")
    probe_cmd.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.command == "build" and args.plant_induction and args.size != "default":
        # fail before the curriculum and the tokenizer are built, not 90 seconds later
        parser.error(f"--plant-induction is written for --size default; add --no-plant-induction for {args.size}")

    import torch

    torch.set_num_threads(args.threads)
    if args.command == "smol":
        from pathlib import Path

        from llmos_tiny.smol_train import SmolSettings
        from llmos_tiny.smol_train import build as build_smol

        settings = SmolSettings(
            conversations=args.conversations,
            seed=args.seed,
            rank=args.rank,
            lr=args.lr,
            max_tokens=args.max_tokens,
            batch_tokens=args.batch_tokens,
            max_minutes=args.max_minutes,
            device=args.device,
            threads=args.threads,
            init_from=args.init_from,
        )
        record = build_smol(Path(args.out), settings)
        print(json.dumps({k: v for k, v in record.items() if k != "log"}))
        return
    if args.command == "probe":
        from llmos_tiny.probe import probe

        print(json.dumps(probe(args.folder)))
        return

    from llmos_tiny.build import build, check_parity, parity_prompts
    from llmos_tiny.model import Config, Tiny
    from llmos_tiny.tokenizer import Tokenizer

    report = build(
        args.out,
        size=args.size,
        steps=args.steps,
        copy_steps=args.copy_steps,
        copy_every=args.copy_every,
        copy_length=args.copy_length,
        copy_weight=args.copy_weight,
        split_spaces=args.split_spaces,
        plant=args.plant_induction,
        bf16=args.bf16,
        max_len=args.max_len,
        batch_size=args.batch_size,
        batch_tokens=args.batch_tokens,
        lr=args.lr,
        max_seconds=args.max_minutes * 60,
        seed=args.seed,
        conversations=args.conversations,
        device=args.device,
        stop_after=args.stop_after or "",
        init_from=args.init_from,
    )
    if args.stop_after:
        print(json.dumps(report))
        return
    state = torch.load(f"{args.out}/checkpoint.pt", weights_only=False, map_location="cpu")
    model = Tiny(Config(**state["config"]))
    model.load_state_dict(state["model"])
    model.eval()
    tokenizer = Tokenizer.load(f"{args.out}/tokenizer.json")
    print(json.dumps(check_parity(model, tokenizer, report["gguf"], parity_prompts(tokenizer))))


if __name__ == "__main__":
    main()
