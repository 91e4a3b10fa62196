"""Train ``toy-seg``, the tiny CLIPSeg shipped for offline "where is it?", deterministically.

Usage::

    python scripts/train_toy_seg.py searchengine/toy/assets/toy-seg

The output folder has the file layout of the hub repo ``CIDAS/clipseg-rd64-refined``
(config.json, preprocessor_config.json, pytorch_model.bin, vocab.json, merges.txt,
tokenizer_config.json, special_tokens_map.json; no tokenizer.json) and loads through the
same ``CLIPSegProcessor`` + ``CLIPSegForImageSegmentation.from_pretrained`` path as the
real model (``searchengine.models.clipseg``). The processor is written first and loaded
back through that path, so training sees images exactly as ``searchengine where`` will:
photo-sized renders of the toy world (half round-tripped through JPEG), squashed to
the model's square input with the processor's own resize and normalisation.

What it learns: for a phrase naming one toy object partially or fully ("a red circle",
"the star at the top left", "a small triangle"), the exact mask of every object the
phrase is true of (``searchengine.toy.masks``); for a phrase true of no object (a
third of the samples, mostly near misses: right shape, wrong colour or place), an empty
map. Loss: per-pixel binary cross-entropy plus a soft Dice term on the phrases that
have an object (objects cover a few percent of the frame; Dice keeps them from being
drowned by the background).

Determinism: fixed seeds, ``torch.use_deterministic_algorithms(True)`` and a fixed
thread count (``--threads``, default 2), as in ``train_toy_clip.py``. Training seeds
never overlap the held-out evaluation seeds (``searchengine.toy.masks.HELD_OUT_SEEDS``).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import multiprocessing
import random
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from searchengine.scoring import with_prefix
from searchengine.toy import masks as toymasks
from searchengine.toy import world as toyworld

INPUT = 128  # processor size = vision image size: an 8x8 grid of 16-pixel patches
PHOTO_SIZE = (640, 480)
CHECK_SEED = 997  # quick held-out check at the end; the measured numbers use 5151
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
# Words spelled out as single tokens; anything else still tokenizes, byte by byte.
WORDS = (
    *toyworld.SHAPES, *toyworld.COLORS, *toyworld.SIZES,
    "top", "bottom", "left", "right", "center", "centre", "middle",
    "a", "an", "the", "at", "in", "of", "on", "and", "is", "where", "photo", "depicts",
    "picture", "image", "object", "shape", "thing", "dog", "cat", "car", "person",
)  # fmt: skip
ARCH: dict[str, Any] = {
    "text": {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2,
             "num_attention_heads": 2, "max_position_embeddings": 32},
    "vision": {"hidden_size": 96, "intermediate_size": 384, "num_hidden_layers": 3,
               "num_attention_heads": 4, "image_size": INPUT, "patch_size": 16},
    "projection_dim": 64,
    "extract_layers": [0, 1, 2],  # the output of every layer (hidden_states[i + 1])
    "reduce_dim": 64,
    "decoder_num_attention_heads": 4,
    "decoder_intermediate_size": 256,
    "use_complex_transposed_convolution": True,
}  # fmt: skip


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run depends on."""

    out_dir: Path
    steps: int
    scenes: int
    seed: int
    batch_size: int
    lr: float
    threads: int
    bf16: bool


def parse_args(argv: Sequence[str] | None = None) -> TrainConfig:
    """Parse the command line into a ``TrainConfig``; held-out seeds are refused."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="model folder to write")
    parser.add_argument("--steps", type=int, default=1500, help="optimizer steps")
    parser.add_argument("--scenes", type=int, default=4000, help="training scenes")
    parser.add_argument("--seed", type=int, default=11, help="world, phrase and init seed")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (fixed)")
    # bf16 autocast costs more in casts than it saves in matmuls at these widths.
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast")
    args = parser.parse_args(argv)
    if args.seed in toymasks.HELD_OUT_SEEDS or args.seed == CHECK_SEED:
        parser.error(f"seed {args.seed} is held out for evaluation; train on another")
    return TrainConfig(
        args.out_dir,
        args.steps,
        args.scenes,
        args.seed,
        args.batch_size,
        args.lr,
        args.threads,
        args.bf16,
    )


def make_deterministic(seed: int, threads: int) -> None:
    """Fix every source of randomness and the thread count."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


# ------------------------------------------------------------------ the repo's files


def bpe_vocabulary() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's byte-level BPE layout, cut down: 256 bytes, bytes + ``</w>``, word merges.

    Specials come last, as in CLIP, so ``<|endoftext|>`` has the highest id (the legacy
    ``eos_token_id: 2`` of the real config pools the text on the highest id).
    """
    byte_chars = _bytes_to_unicode()
    vocab = list(byte_chars) + [c + "</w>" for c in byte_chars]
    merges: list[tuple[str, str]] = []
    for word in WORDS:
        pieces = [*word[:-1], word[-1] + "</w>"]
        left = pieces[0]
        for right in pieces[1:]:
            if (left, right) not in merges:
                merges.append((left, right))
                vocab.append(left + right)
            left += right
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(dict.fromkeys(vocab))}, merges


def _bytes_to_unicode() -> list[str]:
    """GPT-2/CLIP's printable stand-in for each byte value, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    extra = 0
    chars = {}
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def write_repo_files(out_dir: Path) -> dict[str, int]:
    """Config-free files of the repo layout: processor and tokenizer. Returns the vocab."""
    vocab, merges = bpe_vocabulary()
    specials = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
    }
    files = {
        "vocab.json": json.dumps(vocab, ensure_ascii=False),
        "merges.txt": "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
        "special_tokens_map.json": json.dumps(specials, indent=2),
        "tokenizer_config.json": json.dumps(
            {
                "tokenizer_class": "CLIPTokenizer",
                "processor_class": "CLIPSegProcessor",
                "do_lower_case": True,
                "errors": "replace",
                "add_prefix_space": False,
                "model_max_length": ARCH["text"]["max_position_embeddings"],
                **specials,
            },
            indent=2,
        ),
        "preprocessor_config.json": json.dumps(
            {
                "do_normalize": True,
                "do_rescale": True,
                "do_resize": True,
                "feature_extractor_type": "ViTFeatureExtractor",
                "image_mean": IMAGENET_MEAN,
                "image_processor_type": "ViTImageProcessor",
                "image_std": IMAGENET_STD,
                "processor_class": "CLIPSegProcessor",
                "resample": 2,
                "rescale_factor": 1 / 255,
                "size": {"height": INPUT, "width": INPUT},
            },
            indent=2,
        ),
    }
    for name, text in files.items():
        (out_dir / name).write_text(text + ("" if text.endswith("\n") else "\n"), "utf-8")
    return vocab


def build_model(cfg: TrainConfig) -> tuple[torch.nn.Module, Any]:
    """Write the processor files, load the processor back, build a fresh model."""
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation, CLIPSegProcessor

    if cfg.out_dir.exists():
        shutil.rmtree(cfg.out_dir)
    cfg.out_dir.mkdir(parents=True)
    vocab = write_repo_files(cfg.out_dir)
    processor = CLIPSegProcessor.from_pretrained(str(cfg.out_dir))
    config = CLIPSegConfig(
        text_config={**ARCH["text"], "vocab_size": len(vocab), "bos_token_id": 0,
                     "eos_token_id": 2, "pad_token_id": 1},
        vision_config=ARCH["vision"],
        **{k: v for k, v in ARCH.items() if k not in ("text", "vision")},
    )  # fmt: skip
    config.architectures = ["CLIPSegForImageSegmentation"]
    model = CLIPSegForImageSegmentation(config)
    init_head(model.decoder.transposed_convolution)
    return model, processor


# Objects cover about 2% of a toy photo: start every pixel there, not at 50%.
_PRIOR_LOGIT = math.log(0.02 / 0.98)


def init_head(head: torch.nn.Sequential) -> None:
    """He-normal convolutions and a final layer that starts near the background prior.

    The library's default initialisation leaves this head's output at logits in the
    hundreds, which saturates the first steps' loss.
    """
    convs = [m for m in head if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    for conv in convs:
        torch.nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
        torch.nn.init.zeros_(conv.bias)
    torch.nn.init.normal_(convs[-1].weight, std=0.01)
    torch.nn.init.constant_(convs[-1].bias, _PRIOR_LOGIT)


# ---------------------------------------------------------------------------- the data


def render_scene(args: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, toyworld.Scene]:
    """Scene ``index`` of world ``seed``: its pixels at the model's input size, and masks.

    Pixels are the processor's resize of the photo-sized render (half of them JPEG
    round-tripped first); masks are each object's exact mask area-averaged to the same
    grid, so edge pixels carry their covered fraction.
    """
    seed, index, size = args
    scene = toyworld.sample_scene(np.random.default_rng((seed, index)))
    image, regions = toymasks.scene_regions(scene, PHOTO_SIZE)
    if index % 2 == 0:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        image = Image.open(buffer).convert("RGB")
    pixels = np.array(image.resize((size, size), Image.Resampling.BILINEAR))
    masks = np.zeros((2, size, size), dtype=np.uint8)
    for k, region in enumerate(regions):
        full = Image.fromarray(region.mask.astype(np.uint8) * 255)
        masks[k] = np.asarray(full.resize((size, size), Image.Resampling.BOX))
    return pixels, masks, scene


def render_dataset(
    seed: int, count: int, workers: int = 2
) -> tuple[np.ndarray, np.ndarray, list[toyworld.Scene]]:
    """``count`` scenes rendered in parallel: uint8 pixels, uint8 masks, the scenes."""
    jobs = [(seed, i, INPUT) for i in range(count)]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        results = pool.map(render_scene, jobs, chunksize=64)
    return (
        np.stack([r[0] for r in results]),
        np.stack([r[1] for r in results]),
        [r[2] for r in results],
    )


def normalise(pixels: np.ndarray) -> torch.Tensor:
    """uint8 ``(n, h, w, 3)`` into the processor's float input (rescale + ImageNet norm)."""
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def check_matches_processor(processor: Any, seed: int) -> None:
    """The cached tensors equal what the processor makes of the same photo."""
    pixels, _, scene = render_scene((seed, 1, INPUT))  # odd index: no JPEG round trip
    reference = processor(images=toyworld.render(scene, PHOTO_SIZE), return_tensors="pt")
    gap = (reference["pixel_values"] - normalise(pixels[None])).abs().max().item()
    if gap > 1e-4:
        raise SystemExit(f"cached pixels differ from the processor's by {gap}")


_NEAR_MISS = ("color", "shape", "position", "size")


def sample_phrase(scene: toyworld.Scene, rng: np.random.Generator) -> toyworld.Mention:
    """A phrase for the scene: two thirds true of an object, one third of none.

    True phrases name the shape plus a random subset of colour, size and position.
    False ones are mostly near misses of a real object (one attribute changed), else a
    random object; either is kept only if no object of the scene matches it.
    """
    if rng.random() < 2 / 3:
        obj = scene.objects[rng.integers(len(scene.objects))]
        keep = rng.random(3) < 0.5
        return toyworld.Mention(
            obj.shape,
            obj.color if keep[0] else None,
            obj.size if keep[1] else None,
            obj.position if keep[2] else None,
        )
    while True:
        base = scene.objects[rng.integers(len(scene.objects))]
        if rng.random() < 0.7:
            attrs = {"shape": base.shape, "color": base.color, "size": base.size,
                     "position": base.position}  # fmt: skip
            changed = _NEAR_MISS[rng.integers(len(_NEAR_MISS))]
            choices = {
                "color": tuple(toyworld.COLORS),
                "shape": toyworld.SHAPES,
                "position": toyworld.POSITIONS,
                "size": toyworld.SIZES,
            }[changed]
            attrs[changed] = choices[rng.integers(len(choices))]
            keep = rng.random(3) < 0.6  # colour, size, position
            if changed != "shape":  # the changed attribute must be said, or it is no miss
                keep[("color", "size", "position").index(changed)] = True
            mention = toyworld.Mention(
                attrs["shape"],
                attrs["color"] if keep[0] else None,
                attrs["size"] if keep[1] else None,
                attrs["position"] if keep[2] else None,
            )
        else:
            other = toyworld.sample_scene(rng).objects[0]
            mention = toyworld.Mention(other.shape, other.color if rng.random() < 0.7 else None)
        if not any(mention.matches(o) for o in scene.objects):
            return mention


def phrase_text(mention: toyworld.Mention, rng: np.random.Generator) -> str:
    """The phrase in one of a few everyday wordings, so the model is not tied to one."""
    text = mention.text()
    roll = rng.random()
    if roll < 0.2:
        return with_prefix(text)
    if roll < 0.35:
        return "the " + text[2:] if text.startswith("a ") else text
    return text


def batch_targets(
    masks: np.ndarray, scenes: Sequence[toyworld.Scene], mentions: Sequence[toyworld.Mention]
) -> torch.Tensor:
    """``(b, h, w)`` float targets: the union of the masks of the objects each phrase names."""
    out = np.zeros((len(scenes), INPUT, INPUT), dtype=np.float32)
    for i, (scene, mention) in enumerate(zip(scenes, mentions, strict=True)):
        for k, obj in enumerate(scene.objects):
            if mention.matches(obj):
                out[i] = np.maximum(out[i], masks[i, k] / 255.0)
    return torch.from_numpy(out)


# ------------------------------------------------------------------------ the training


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE over every pixel plus soft Dice over the phrases that name an object."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    present = target.flatten(1).sum(1) > 0
    if not present.any():
        return bce
    prob = torch.sigmoid(logits[present]).flatten(1)
    truth = target[present].flatten(1)
    dice = 1 - (2 * (prob * truth).sum(1) + 1) / (prob.sum(1) + truth.sum(1) + 1)
    return bce + dice.mean()


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up over 5% of the steps, then cosine decay to zero."""
    warmup = max(1, cfg.steps // 20)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, cfg.steps - warmup)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))


def train(
    model: torch.nn.Module,
    processor: Any,
    data: tuple[np.ndarray, np.ndarray, list[toyworld.Scene]],
    cfg: TrainConfig,
) -> None:
    """Supervised mask training; prints progress."""
    pixels, masks, scenes = data
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
    )
    token_cache: dict[str, list[int]] = {}
    started, running = time.monotonic(), 0.0
    model.train()
    for step in range(cfg.steps):
        rng = np.random.default_rng((cfg.seed, 3, step))
        idx = rng.choice(len(scenes), size=cfg.batch_size, replace=False)
        picked = [scenes[i] for i in idx]
        mentions = [sample_phrase(s, rng) for s in picked]
        texts = [phrase_text(m, rng) for m in mentions]
        tokens = _tokens(processor, texts, token_cache)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            out = model(pixel_values=normalise(pixels[idx]), **tokens)
        loss = segmentation_loss(out.logits.float(), batch_targets(masks[idx], picked, mentions))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        running = 0.95 * running + 0.05 * loss.item() if step else loss.item()
        if step % 50 == 0 or step == cfg.steps - 1:
            elapsed = time.monotonic() - started
            print(f"step {step + 1}/{cfg.steps} loss {running:.3f} {elapsed:.0f}s", flush=True)


def _tokens(processor: Any, texts: Sequence[str], cache: dict[str, list[int]]) -> dict[str, Any]:
    """Token ids padded to the longest phrase, through the repo's own tokenizer."""
    missing = [t for t in dict.fromkeys(texts) if t not in cache]
    if missing:
        ids = processor.tokenizer(missing, truncation=True)["input_ids"]
        cache.update(zip(missing, ids, strict=True))
    longest = max(len(cache[t]) for t in texts)
    pad = processor.tokenizer.pad_token_id
    input_ids = torch.full((len(texts), longest), pad, dtype=torch.long)
    attention = torch.zeros((len(texts), longest), dtype=torch.long)
    for i, text in enumerate(texts):
        row = cache[text]
        input_ids[i, : len(row)] = torch.tensor(row)
        attention[i, : len(row)] = 1
    return {"input_ids": input_ids, "attention_mask": attention}


def save_weights(model: torch.nn.Module, out_dir: Path) -> Path:
    """``config.json`` + ``pytorch_model.bin``, as the real repo stores them (fp32)."""
    record = model.config.to_dict()
    record["torch_dtype"] = "float32"
    (out_dir / "config.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    path = out_dir / "pytorch_model.bin"
    torch.save(state, path)
    return path


def quick_check(out_dir: Path, seed: int, count: int = 200) -> dict[str, float]:
    """Reload the folder the way the package does; peak-in-object and not-found rates.

    One true phrase (shape and colour of the first object) and one false phrase per scene.
    """
    from searchengine.models.clipseg import ClipSeg
    from searchengine.where import locate_images

    seg = ClipSeg(str(out_dir), device="cpu")
    hits = present = quiet = 0
    for index in range(count):
        scene = toyworld.sample_scene(np.random.default_rng((seed, index)))
        image, regions = toymasks.scene_regions(scene, PHOTO_SIZE)
        true = toyworld.Mention(scene.objects[0].shape, scene.objects[0].color)
        rng = np.random.default_rng((seed, 7, index))
        wrong = sample_phrase(scene, rng)
        while any(wrong.matches(o) for o in scene.objects):
            wrong = sample_phrase(scene, rng)
        found, missing = locate_images(
            seg, [image, image], [true.text(), wrong.text()], [PHOTO_SIZE] * 2
        )
        x, y = found.peak
        hits += bool(toymasks.matching_mask(regions, true, PHOTO_SIZE)[y, x])
        present += found.found
        quiet += not missing.found
    return {
        "peak_in_object": hits / count,
        "found_when_present": present / count,
        "not_found_when_absent": quiet / count,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Train toy-seg and write it to the output folder."""
    cfg = parse_args(argv)
    make_deterministic(cfg.seed, cfg.threads)
    started = time.monotonic()
    model, processor = build_model(cfg)
    check_matches_processor(processor, cfg.seed)
    params = sum(p.numel() for p in model.parameters())
    print(f"toy-seg: {params / 1e6:.2f}M parameters; rendering {cfg.scenes} scenes", flush=True)
    data = render_dataset(cfg.seed, cfg.scenes)
    print(f"rendered in {time.monotonic() - started:.0f}s", flush=True)
    train(model, processor, data, cfg)
    path = save_weights(model, cfg.out_dir)
    minutes = (time.monotonic() - started) / 60
    cpu = time.process_time() / 60
    print(
        f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) in {minutes:.1f} min "
        f"({cpu:.1f} CPU min on {cfg.threads} threads)"
    )
    check = quick_check(cfg.out_dir, CHECK_SEED)
    print(f"quick held-out check (seed {CHECK_SEED}): {json.dumps(check)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
