"""Train ``toy-seg``, the tiny CLIPSeg shipped for offline "where is it?", deterministically.

Usage::

    python scripts/train_toy_seg.py searchengine/toy/assets/toy-seg

The output folder has the file layout of the hub repo ``CIDAS/clipseg-rd64-refined``
(config.json, preprocessor_config.json, pytorch_model.bin, vocab.json, merges.txt,
tokenizer_config.json, special_tokens_map.json; no tokenizer.json) and loads through the
same ``CLIPSegProcessor`` + ``CLIPSegForImageSegmentation.from_pretrained`` path as the
real model (``searchengine.models.clipseg``).

As CLIPSeg is built on a frozen CLIP, toy-seg is built on the shipped ``toy`` CLIP: its
two towers are copied into CLIPSeg's (``toy_seg_base.py``: open_clip's layout into
transformers', the tokenizer cut down to the BPE merges toy phrases use) and frozen; only
CLIPSeg's decoder (layer reductions, FiLM, three transformer layers, the refined
transposed-convolution head) is trained. The processor squashes photos to the toy
CLIP's 64 x 64 input with its bicubic resize and CLIP mean/std, and is written first and
loaded back, so training sees images exactly as ``searchengine where`` will:
photo-sized renders of the toy world (half round-tripped through JPEG).

What it learns: for a phrase naming one toy object partially or fully ("a red circle",
"the star at the top left", "a small triangle"), the exact mask of every object the
phrase is true of (``searchengine.toy.masks``); for a phrase true of no object (a
third of the samples, mostly near misses: right shape, wrong colour or place), an empty
map. Loss: per-pixel binary cross-entropy, a soft Dice term on the phrases that have an
object (objects cover a few percent of the frame; Dice keeps them from being drowned by
the background), and a presence term on each map's peak, which is what ``where``
reads as found or not found.

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
import open_clip
import torch
import torch.nn.functional as F
import toy_seg_base as base
from PIL import Image

from searchengine.models.spec import shipped_model_dir
from searchengine.scoring import with_prefix
from searchengine.toy import masks as toymasks
from searchengine.toy import world as toyworld

PHOTO_SIZE = (640, 480)
CHECK_SEED = 997  # quick held-out check at the end; the measured numbers use 5151
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
# The decoder of CIDAS/clipseg-rd64-refined (reduce_dim 64, 4 heads, the refined head),
# narrower in its MLP; extract_layers reads every layer of the 3-layer tower, as the real
# (3, 6, 9) reads every third of 12.
DECODER = {
    "extract_layers": [0, 1, 2],
    "reduce_dim": 64,
    "decoder_num_attention_heads": 4,
    "decoder_intermediate_size": 256,
    "use_complex_transposed_convolution": True,
}


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
    check_scenes: int = 200


def parse_args(argv: Sequence[str] | None = None) -> TrainConfig:
    """Parse the command line into a ``TrainConfig``; held-out seeds are refused."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="model folder to write")
    parser.add_argument("--steps", type=int, default=3000, help="optimizer steps")
    parser.add_argument("--scenes", type=int, default=6000, help="training scenes")
    parser.add_argument("--seed", type=int, default=11, help="world, phrase and init seed")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (fixed)")
    parser.add_argument(
        "--check-scenes", type=int, default=200, help="scenes of the quick check (0: none)"
    )
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
        args.check_scenes,
    )


def make_deterministic(seed: int, threads: int) -> None:
    """Fix every source of randomness and the thread count."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


# ---------------------------------------------------------------- model and files


def load_toy_clip() -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """The shipped ``toy`` CLIP (eval mode), its tokenizer and its config."""
    folder = shipped_model_dir("toy")
    name = f"local-dir:{folder}"
    clip, _, _ = open_clip.create_model_and_transforms(name)
    config = json.loads((folder / "open_clip_config.json").read_text())
    return clip.eval(), open_clip.get_tokenizer(name), config


def write_processor(out_dir: Path, size: int) -> None:
    """preprocessor_config.json: the toy CLIP's squash to ``size``, bicubic, CLIP mean/std."""
    config = {
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "feature_extractor_type": "ViTFeatureExtractor",
        "image_mean": CLIP_MEAN,
        "image_processor_type": "ViTImageProcessor",
        "image_std": CLIP_STD,
        "processor_class": "CLIPSegProcessor",
        "resample": 3,  # bicubic, as the toy CLIP was trained
        "rescale_factor": 1 / 255,
        "size": {"height": size, "width": size},
    }
    (out_dir / "preprocessor_config.json").write_text(json.dumps(config, indent=2) + "\n")


def build_model(cfg: TrainConfig) -> tuple[torch.nn.Module, Any, int]:
    """Write processor and tokenizer, load them back, build CLIPSeg on the toy towers.

    Returns the model (towers frozen), the processor and the input size.
    """
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation, CLIPSegProcessor

    if cfg.out_dir.exists():
        shutil.rmtree(cfg.out_dir)
    cfg.out_dir.mkdir(parents=True)
    clip, clip_tokenizer, toy = load_toy_clip()
    vision, text = toy["model_cfg"]["vision_cfg"], toy["model_cfg"]["text_cfg"]
    tokens, merges = base.cut_vocabulary(clip_tokenizer)
    base.write_tokenizer_files(cfg.out_dir, tokens, merges, text["context_length"])
    write_processor(cfg.out_dir, vision["image_size"])
    processor = CLIPSegProcessor.from_pretrained(str(cfg.out_dir))
    config = CLIPSegConfig(
        text_config={
            "vocab_size": len(tokens), "hidden_size": text["width"],
            "intermediate_size": text["width"] * 4, "num_hidden_layers": text["layers"],
            "num_attention_heads": text["heads"],
            "max_position_embeddings": text["context_length"], "hidden_act": "gelu",
            # As the real repo: legacy ids, the text pooled at its highest token id.
            "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
        },
        vision_config={
            "hidden_size": vision["width"],
            "intermediate_size": int(vision["width"] * vision["mlp_ratio"]),
            "num_hidden_layers": vision["layers"],
            "num_attention_heads": vision["width"] // vision["head_width"],
            "image_size": vision["image_size"], "patch_size": vision["patch_size"],
            "hidden_act": "gelu",
        },
        projection_dim=toy["model_cfg"]["embed_dim"],
        **DECODER,
    )  # fmt: skip
    config.architectures = ["CLIPSegForImageSegmentation"]
    model = CLIPSegForImageSegmentation(config)
    init_head(model.decoder.transposed_convolution)
    missing = model.load_state_dict(base.tower_weights(clip, clip_tokenizer, tokens), strict=False)
    towers = [k for k in missing.missing_keys if k.startswith("clip.") and "position_ids" not in k]
    if towers or missing.unexpected_keys:
        raise SystemExit(f"tower weights do not fit: {towers or missing.unexpected_keys}")
    for param in model.clip.parameters():
        param.requires_grad = False  # CLIPSeg trains its decoder on a frozen CLIP
    model.eval()
    phrases = [toyworld.Mention(s, c, z, p).text() for s, c, z, p in _some_mentions()]
    base.check_tokens(processor.tokenizer, clip_tokenizer, [*phrases, with_prefix(phrases[0])])
    pixels = torch.randn(4, 3, vision["image_size"], vision["image_size"])
    agreement = base.check_towers(model, clip, clip_tokenizer, processor, phrases[:8], pixels)
    if agreement < 0.9999:
        raise SystemExit(f"CLIPSeg's towers differ from toy's (cosine {agreement:.5f})")
    return model, processor, vision["image_size"]


def _some_mentions() -> list[tuple[str, str, str, str]]:
    rng = np.random.default_rng(0)
    return [
        (
            toyworld.SHAPES[rng.integers(6)], list(toyworld.COLORS)[rng.integers(8)],
            toyworld.SIZES[rng.integers(2)], toyworld.POSITIONS[rng.integers(5)],
        )
        for _ in range(64)
    ]  # fmt: skip


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


@torch.no_grad()
def init_conditioning(model: Any, activations: list[torch.Tensor], texts: torch.Tensor) -> None:
    """Start the decoder where the phrase can steer it (data-dependent, deterministic).

    The toy tower's activations are large (std 1.3 to 1.9, peaks near 10); through the
    default initialisation the layer reductions add outputs of std ~10 to a decoder
    stream that LayerNorm keeps near 1, so the FiLM step (the only place the phrase
    enters) is drowned and training settles on a phrase-blind "objects" map. Here each
    reduction starts at output std 0.5, FiLM's scale at 1 and its shift at 0, each
    moved by the phrase with std 0.5.
    """
    for reduce, acts in zip(model.decoder.reduces, reversed(activations), strict=True):
        reduce.weight.mul_(0.5 / reduce(acts.float()).std())
        reduce.bias.zero_()
    spread = texts.norm(dim=1).mean()
    for film, bias in ((model.decoder.film_mul, 1.0), (model.decoder.film_add, 0.0)):
        torch.nn.init.normal_(film.weight, std=0.5 / float(spread))
        torch.nn.init.constant_(film.bias, bias)


# ---------------------------------------------------------------------------- the data


def render_scene(args: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray, toyworld.Scene]:
    """Scene ``index`` of world ``seed``: its pixels at the model's input size, and masks.

    Pixels are the processor's squash of the photo-sized render (half of them JPEG
    round-tripped first); masks are each object's exact mask area-averaged to the
    model's output grid, so edge pixels carry their covered fraction.
    """
    seed, index, size, out = args
    scene = toyworld.sample_scene(np.random.default_rng((seed, index)))
    image, regions = toymasks.scene_regions(scene, PHOTO_SIZE)
    if index % 2 == 0:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        image = Image.open(buffer).convert("RGB")
    pixels = np.array(image.resize((size, size), Image.Resampling.BICUBIC))
    masks = np.zeros((2, out, out), dtype=np.uint8)
    for k, region in enumerate(regions):
        full = Image.fromarray(region.mask.astype(np.uint8) * 255)
        masks[k] = np.asarray(full.resize((out, out), Image.Resampling.BOX))
    return pixels, masks, scene


def render_dataset(
    seed: int, count: int, size: int, out: int, workers: int = 2
) -> tuple[np.ndarray, np.ndarray, list[toyworld.Scene]]:
    """``count`` scenes rendered in parallel: uint8 pixels, uint8 masks, the scenes."""
    jobs = [(seed, i, size, out) for i in range(count)]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        results = pool.map(render_scene, jobs, chunksize=64)
    return (
        np.stack([r[0] for r in results]),
        np.stack([r[1] for r in results]),
        [r[2] for r in results],
    )


def normalise(pixels: np.ndarray) -> torch.Tensor:
    """uint8 ``(n, h, w, 3)`` into the processor's float input (rescale + CLIP norm)."""
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def check_matches_processor(processor: Any, seed: int, size: int) -> None:
    """The cached tensors equal what the processor makes of the same photo."""
    pixels, _, scene = render_scene((seed, 1, size, 8))  # odd index: no JPEG round trip
    reference = processor(images=toyworld.render(scene, PHOTO_SIZE), return_tensors="pt")
    gap = (reference["pixel_values"] - normalise(pixels[None])).abs().max().item()
    if gap > 1e-4:
        raise SystemExit(f"cached pixels differ from the processor's by {gap}")


@torch.no_grad()
def vision_activations(model: Any, pixels: np.ndarray, batch: int = 256) -> list[torch.Tensor]:
    """The frozen vision tower's outputs the decoder reads, once per scene (fp16)."""
    layers = model.config.extract_layers
    chunks: list[list[torch.Tensor]] = [[] for _ in layers]
    for start in range(0, len(pixels), batch):
        out = model.clip.vision_model(
            pixel_values=normalise(pixels[start : start + batch]), output_hidden_states=True
        )
        for k, layer in enumerate(layers):
            chunks[k].append(out.hidden_states[layer + 1].half())
    return [torch.cat(c) for c in chunks]


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
    out = np.zeros((len(scenes), *masks.shape[-2:]), dtype=np.float32)
    for i, (scene, mention) in enumerate(zip(scenes, mentions, strict=True)):
        for k, obj in enumerate(scene.objects):
            if mention.matches(obj):
                out[i] = np.maximum(out[i], masks[i, k] / 255.0)
    return torch.from_numpy(out)


def train(
    model: Any,
    processor: Any,
    data: tuple[list[torch.Tensor], np.ndarray, list[toyworld.Scene]],
    cfg: TrainConfig,
) -> None:
    """Decoder training on cached activations and phrase embeddings; prints progress.

    The towers are frozen, so each scene's activations and each phrase's embedding are
    computed once; a step runs the decoder alone, exactly as the model's forward does
    (checked in ``check_decoder_path``).
    """
    activations, masks, scenes = data
    params = list(model.decoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.98), weight_decay=0.01)
    embeddings: dict[str, torch.Tensor] = {}
    started, running = time.monotonic(), 0.0
    model.decoder.train()
    for step in range(cfg.steps):
        rng = np.random.default_rng((cfg.seed, 3, step))
        idx = rng.choice(len(scenes), size=cfg.batch_size, replace=False)
        picked = [scenes[i] for i in idx]
        mentions = [sample_phrase(s, rng) for s in picked]
        texts = [phrase_text(m, rng) for m in mentions]
        condition = phrase_embeddings(model, processor, texts, embeddings)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        acts = [a[idx].float() for a in activations]
        logits = model.decoder(acts, condition).logits
        loss = segmentation_loss(logits, batch_targets(masks[idx], picked, mentions))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        running = 0.95 * running + 0.05 * loss.item() if step else loss.item()
        if step % 100 == 0 or step == cfg.steps - 1:
            elapsed = time.monotonic() - started
            print(f"step {step + 1}/{cfg.steps} loss {running:.3f} {elapsed:.0f}s", flush=True)
    model.decoder.eval()


@torch.no_grad()
def phrase_embeddings(
    model: Any, processor: Any, texts: Sequence[str], cache: dict[str, torch.Tensor]
) -> torch.Tensor:
    """The frozen text tower's projected embedding of each phrase (cached)."""
    missing = sorted({t for t in texts if t not in cache})
    if missing:
        ids = processor.tokenizer(missing, padding=True, truncation=True, return_tensors="pt")
        out = model.clip.get_text_features(**ids)
        vectors = getattr(out, "pooler_output", out)
        cache.update(zip(missing, vectors, strict=True))
    return torch.stack([cache[t] for t in texts])


@torch.no_grad()
def check_decoder_path(
    model: Any, processor: Any, pixels: np.ndarray, acts: list[torch.Tensor]
) -> None:
    """The cached path (activations + embedding -> decoder) is the model's forward."""
    texts = ["a red circle", "a small blue star at the top left"]
    inputs = processor(text=texts, padding=True, return_tensors="pt")
    whole = model(pixel_values=normalise(pixels[:2]), **inputs).logits
    cached = model.decoder(
        [a[:2].float() for a in acts], phrase_embeddings(model, processor, texts, {})
    ).logits
    gap = (whole - cached).abs().max().item()
    if gap > 5e-2:  # fp16 activation cache
        raise SystemExit(f"the cached decoder path differs from the model's by {gap}")


def save_weights(model: torch.nn.Module, out_dir: Path) -> Path:
    """``config.json`` + ``pytorch_model.bin``, as the real repo stores them (fp32)."""
    record = model.config.to_dict()
    record["torch_dtype"] = "float32"
    (out_dir / "config.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    path = out_dir / "pytorch_model.bin"
    torch.save(state, path)
    return path


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-pixel BCE, soft Dice over phrases that name an object, and a presence term.

    The presence term is BCE of each map's highest logit against whether the phrase
    names anything: ``where`` reports "found" from that very peak, and the per-pixel
    loss alone leaves a near miss ("a red square" beside a red circle) a confident
    peak in one phrase of six.
    """
    bce = F.binary_cross_entropy_with_logits(logits, target)
    flat = target.flatten(1)
    present = flat.amax(1) > 0.5
    peak = logits.flatten(1).amax(1)
    presence = F.binary_cross_entropy_with_logits(peak, present.float())
    if not present.any():
        return bce + presence
    prob = torch.sigmoid(logits[present]).flatten(1)
    truth = flat[present]
    dice = 1 - (2 * (prob * truth).sum(1) + 1) / (prob.sum(1) + truth.sum(1) + 1)
    return bce + dice.mean() + presence


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up over 5% of the steps, then cosine decay to zero."""
    warmup = max(1, cfg.steps // 20)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, cfg.steps - warmup)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))


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
    model, processor, size = build_model(cfg)
    check_matches_processor(processor, cfg.seed, size)
    out = model(
        pixel_values=torch.zeros(1, 3, size, size), **processor(text=["a"], return_tensors="pt")
    ).logits.shape[-1]
    trained = sum(p.numel() for p in model.decoder.parameters())
    print(f"toy-seg: {trained / 1e6:.2f}M decoder parameters on toy's towers; {size} px in, "
          f"{out} px out; rendering {cfg.scenes} scenes", flush=True)  # fmt: skip
    pixels, masks, scenes = render_dataset(cfg.seed, cfg.scenes, size, out)
    activations = vision_activations(model, pixels)
    check_decoder_path(model, processor, pixels, activations)
    sample = [toyworld.Mention(sh, c, z, pos).text() for sh, c, z, pos in _some_mentions()]
    init_conditioning(
        model, [a[:512] for a in activations], phrase_embeddings(model, processor, sample, {})
    )
    print(f"rendered and encoded in {time.monotonic() - started:.0f}s", flush=True)
    train(model, processor, (activations, masks, scenes), cfg)
    path = save_weights(model, cfg.out_dir)
    minutes = (time.monotonic() - started) / 60
    # CPU time of the training process (all its threads; the render workers excluded):
    # on a shared machine, CPU minutes / threads is what the run takes on idle cores.
    cpu = time.process_time() / 60
    print(
        f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) in {minutes:.1f} min "
        f"({cpu:.1f} CPU min on {cfg.threads} threads)"
    )
    if cfg.check_scenes:
        check = quick_check(cfg.out_dir, CHECK_SEED, cfg.check_scenes)
        print(f"quick held-out check (seed {CHECK_SEED}): {json.dumps(check)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
