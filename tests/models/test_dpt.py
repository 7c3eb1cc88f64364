"""DPT against the official implementation: reduced-hybrid fixture, checkpoint layouts, readouts, errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file
from torch import Tensor, nn

from rsvit.models.dpt import (
    DPT,
    DPTHead,
    DPTViTBackbone,
    LegacyStdConv2dSame,
    Readout,
    convert_official_dpt_state_dict,
    dpt_base,
    dpt_hybrid,
    dpt_hybrid_reduced,
    dpt_large,
    normalize,
    resize_pos_embed,
)

SIZES = ("384x384", "384x512")
WEIGHTS = "fixtures/dpt_hybrid_reduced_weights.safetensors"
IO = "fixtures/dpt_hybrid_reduced_io.safetensors"


# ------------------------------------------------------------------------------------------------
# Fixture decoding
# ------------------------------------------------------------------------------------------------


def decode_q4(packed: Tensor, shape: Tensor, scale: Tensor) -> Tensor:
    """The reference README's 4-bit rule: low nibble first, codes - 8, C-order, times the scale."""
    nibbles = torch.stack([packed & 15, packed >> 4], dim=1).reshape(-1)
    numel = math.prod(int(s) for s in shape)
    codes = nibbles[:numel].to(torch.int64) - 8
    return codes.reshape([int(s) for s in shape]).to(torch.float32) * scale


def read_manifest(reference_dir: Path, name: str) -> dict[str, tuple[list[int], str]]:
    rows = {}
    for line in (reference_dir / "keys" / f"{name}.tsv").read_text().splitlines():
        key, shape, dtype = line.split("\t")
        rows[key] = (json.loads(shape), dtype)
    return rows


def official_fixture_state_dict(reference_dir: Path) -> dict[str, Tensor]:
    """The reduced model's official state dict; omitted (unused) entries filled with zeros."""
    path = reference_dir / WEIGHTS
    raw = load_file(path)
    with safe_open(path, "pt") as f:
        meta = json.loads(f.metadata()["json"])
    sd: dict[str, Tensor] = {}
    for key, value in raw.items():
        if key.startswith("q4/"):
            name = key[3:]
            sd[name] = decode_q4(value, raw[f"shape/{name}"], raw[f"scale/{name}"])
        elif not key.startswith(("shape/", "scale/", "selftest/")):
            sd[key] = value
    manifest = read_manifest(reference_dir, "dpt_hybrid_midas")
    for key in meta["omitted_unused_keys"]:
        assert key not in sd
        sd[key] = torch.zeros(manifest[key][0])
    return sd


@pytest.fixture(scope="module")
def io(reference_dir: Path) -> dict[str, Tensor]:
    return load_file(reference_dir / IO)


@pytest.fixture(scope="module")
def reduced_model(reference_dir: Path) -> DPT:
    with torch.device("meta"):  # no random init: every tensor comes from the fixture
        model = dpt_hybrid_reduced()
    sd = convert_official_dpt_state_dict(official_fixture_state_dict(reference_dir))
    model.load_state_dict(sd, strict=True, assign=True)
    return model.eval()


def _capture(model: DPT, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Runs the model once and records the tensors the official probes describe, under the probe names."""
    found: dict[str, Tensor] = {}
    vit = model.backbone.vit
    resnet = vit.patch_embed.backbone
    named: dict[str, nn.Module] = {
        "backbone.stem_out": resnet.stem,
        "vit.patch_proj_out": vit.patch_embed.proj,
        "head.conv0": model.head.output.conv1,
    }
    for i, stage in enumerate(resnet.stages):
        named[f"backbone.stage{i}_out"] = stage
    for i, block in enumerate(vit.blocks):
        named[f"vit.block{i}_out"] = block
    for i in range(4):
        named[f"scratch.layer{i + 1}_rn"] = model.head.projections[i]
        named[f"scratch.refinenet{i + 1}"] = model.head.fusions[i]

    def keep(name: str):
        return lambda _m, _i, out: found.__setitem__(name, out.detach())

    handles = [m.register_forward_hook(keep(n)) for n, m in named.items()]
    handles.append(
        vit.blocks[0].register_forward_pre_hook(lambda _m, a: found.__setitem__("vit.tokens_in", a[0]))
    )

    def keep_maps(_m: nn.Module, _i: object, out: list[Tensor]) -> None:
        for i, t in enumerate(out):
            found[f"reassemble.layer{i + 1}"] = t.detach()

    handles.append(model.backbone.register_forward_hook(keep_maps))
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    return out, found


@pytest.fixture(scope="module")
def runs(reduced_model: DPT, io: dict[str, Tensor]) -> dict[str, tuple[Tensor, dict[str, Tensor]]]:
    return {size: _capture(reduced_model, io[f"input_{size}"]) for size in SIZES}


def _summary(t: Tensor, kind: str) -> Tensor:
    t = t.to(torch.float64)
    tokens = t.ndim == 3  # (B, N, D)
    if kind == "absmean":
        return t.abs().mean().reshape(1)
    if kind == "chmean":
        return t.mean(dim=(0, 1)) if tokens else t.mean(dim=(0, 2, 3))
    if kind == "spmean":
        return t.mean(dim=(0, 1))
    if kind == "tokmean":
        return t.mean(dim=(0, 2))
    raise AssertionError(kind)


# ------------------------------------------------------------------------------------------------
# Equality with the official model
# ------------------------------------------------------------------------------------------------


def test_q4_selftest(reference_dir: Path) -> None:
    raw = load_file(reference_dir / WEIGHTS)
    codes = raw["selftest/codes"]
    decoded = decode_q4(raw["selftest/q4"], torch.tensor(codes.shape), torch.tensor([1.0]))
    assert torch.equal(decoded, codes.to(torch.float32))


def test_normalize_reproduces_fixture_inputs(io: dict[str, Tensor]) -> None:
    for size in SIZES:
        image = io[f"image_u8_{size}"].permute(2, 0, 1).unsqueeze(0)
        assert torch.equal(normalize(image), io[f"input_{size}"])


@pytest.mark.parametrize("size", SIZES)
def test_output_equals_official(
    runs: dict[str, tuple[Tensor, dict[str, Tensor]]], io: dict[str, Tensor], size: str
) -> None:
    out, _ = runs[size]
    ref = io[f"output_{size}"]
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=5e-4, rtol=1e-4)
    assert out.min() >= 0  # final ReLU of the depth head


@pytest.mark.parametrize("size", SIZES)
def test_intermediate_probes_equal_official(
    runs: dict[str, tuple[Tensor, dict[str, Tensor]]], io: dict[str, Tensor], size: str
) -> None:
    _, found = runs[size]
    prefix = f"probe_{size}/"
    probes = {k[len(prefix) :]: v for k, v in io.items() if k.startswith(prefix)}
    checked = set()
    for name, ref in sorted(probes.items()):
        base, _, kind = name.rpartition(".")
        if kind in ("absmean", "chmean", "spmean", "tokmean"):
            ours = _summary(found[base], kind).to(torch.float32)
        else:
            base, ours = name, found[name]
        atol = 1e-4 * max(1.0, ref.abs().max().item())
        torch.testing.assert_close(ours, ref, atol=atol, rtol=0, msg=lambda m, n=name: f"{n}: {m}")
        checked.add(base)
    # Every stage is covered: stem, 3 stages, patch proj, tokens, 2 blocks, 4 + 4 + 4 maps, head conv.
    assert len(checked) == 21, sorted(checked)


def test_pos_embed_resize_equals_official(reduced_model: DPT, io: dict[str, Tensor]) -> None:
    table = reduced_model.backbone.vit.pos_embed.detach()
    assert torch.equal(resize_pos_embed(table, (24, 24)), table)  # trained grid: identity
    resized = resize_pos_embed(table, (24, 32))[0].to(torch.float64)
    assert resized.shape == (1 + 24 * 32, 768)
    ref = {k.split(".", 1)[1]: v for k, v in io.items() if k.startswith("pos_embed_resized_24x32.")}
    ours = {
        "rows0_2": resized[:3],
        "grid_row0": resized[1:33],
        "tokmean": resized.mean(dim=1),
        "chmean": resized.mean(dim=0),
        "absmean": resized.abs().mean().reshape(1),
    }
    assert set(ref) == set(ours)
    for key, value in ours.items():
        torch.testing.assert_close(value.to(torch.float32), ref[key], atol=1e-6, rtol=0)
    # The official bilinear/align_corners=False choice is visible in these probes.
    grid = table[:, 1:].reshape(1, 24, 24, -1).permute(0, 3, 1, 2)
    other = F.interpolate(grid, size=(24, 32), mode="bilinear", align_corners=True)
    assert (other.permute(0, 2, 3, 1).reshape(-1, 768)[:32] - ref["grid_row0"]).abs().max() > 1e-3


def test_legacy_std_conv_formula() -> None:
    conv = LegacyStdConv2dSame(4, 2, 3, stride=2)
    w = conv.weight.detach().reshape(2, -1)
    expected = (w - w.mean(1, keepdim=True)) / (w.std(1, unbiased=False, keepdim=True) + 1e-5)
    torch.testing.assert_close(conv.standardized_weight().reshape(2, -1), expected)
    # TF "SAME": a 10x10 input with k3/s2 is padded (0, 1) per axis -> 5x5 output.
    assert conv(torch.randn(1, 4, 10, 10)).shape == (1, 2, 5, 5)


# ------------------------------------------------------------------------------------------------
# Official checkpoint layouts
# ------------------------------------------------------------------------------------------------

MANIFESTS = {
    "dpt_hybrid_midas": (lambda: dpt_hybrid(), 123_146_985),
    "dpt_large_midas": (lambda: dpt_large(), 344_055_465),
    "dpt_hybrid_ade20k": (lambda: dpt_hybrid(task="segmentation", num_classes=150), 124_076_884),
}
DTYPES = {"float32": torch.float32, "int64": torch.int64}
BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_official_layout_loads_strictly(reference_dir: Path, name: str) -> None:
    build, total = MANIFESTS[name]
    manifest = read_manifest(reference_dir, name)
    params = {k: shape for k, (shape, _) in manifest.items() if not k.endswith(BN_BUFFERS)}
    assert sum(math.prod(shape) for shape in params.values()) == total
    with torch.device("meta"):
        model = build()
        official = {k: torch.zeros(shape, dtype=DTYPES[dt]) for k, (shape, dt) in manifest.items()}
    converted = convert_official_dpt_state_dict(official)
    target = model.state_dict()
    assert set(converted) == set(target)
    for key, value in converted.items():
        assert value.shape == target[key].shape, key
        assert value.dtype == target[key].dtype, key
    model.load_state_dict(converted, strict=True, assign=True)
    # Only the documented unused entries were dropped.
    unused = ("pretrained.model.head.", "pretrained.model.norm.", "scratch.refinenet4.resConfUnit1.")
    dropped = [k for k in official if k.startswith(unused)]
    assert len(dropped) == len(official) - len(converted)
    ours = sum(p.numel() for p in model.parameters())
    assert ours == total - sum(math.prod(params[k]) for k in dropped if k in params)


def test_converter_rejects_foreign_keys_and_strips_module_prefix() -> None:
    sd = {
        "module.scratch.layer1_rn.weight": torch.zeros(1),
        "module.scratch.output_conv.0.bias": torch.zeros(1),
    }
    assert set(convert_official_dpt_state_dict(sd)) == {"head.projections.0.weight", "head.output.conv1.bias"}
    with pytest.raises(KeyError, match="not part of the official DPT layout"):
        convert_official_dpt_state_dict({"backbone.layers.0.weight": torch.zeros(1)})


def test_converter_drops_classifier_of_other_class_count() -> None:
    with torch.device("meta"):
        model = dpt_hybrid(task="segmentation", num_classes=6)
    sd = {"scratch.output_conv.4.weight": torch.zeros(150, 256, 1, 1), "auxlayer.4.bias": torch.zeros(150),
          "scratch.output_conv.1.weight": torch.zeros(256)}  # fmt: skip
    assert set(convert_official_dpt_state_dict(sd, model)) == {"head.output.bn.weight"}


# ------------------------------------------------------------------------------------------------
# Readout, variants, heads, pos-embed resizing at other sizes
# ------------------------------------------------------------------------------------------------


def _tiny_vit(readout: str = "project", **kwargs: object) -> DPTViTBackbone:
    cfg = dict(embed_dim=32, depth=2, num_heads=2, taps=(0, 1, 1, 0), widths=(8, 16, 24, 32), img_size=64)
    cfg.update(kwargs)
    return DPTViTBackbone(readout=readout, **cfg)  # type: ignore[arg-type]


def test_readout_modes() -> None:
    tokens = torch.randn(2, 1 + 6, 8)
    cls, patches = tokens[:, :1], tokens[:, 1:]
    assert torch.equal(Readout("ignore", 8)(tokens), patches)
    torch.testing.assert_close(Readout("add", 8)(tokens), patches + cls)
    project = Readout("project", 8)
    expected = F.gelu(
        F.linear(torch.cat([patches, cls.expand_as(patches)], -1), project.proj.weight, project.proj.bias)
    )
    torch.testing.assert_close(project(tokens), expected)
    assert sum(p.numel() for p in Readout("ignore", 8).parameters()) == 0
    with pytest.raises(ValueError, match="readout must be one of"):
        Readout("mean", 8)  # type: ignore[arg-type]

    x = torch.randn(1, 3, 64, 96)
    outs = {}
    for mode in ("ignore", "add", "project"):
        torch.manual_seed(0)
        bb = _tiny_vit(mode).eval()
        maps = bb(x)
        assert [tuple(m.shape) for m in maps] == [
            (1, 8, 16, 24),
            (1, 16, 8, 12),
            (1, 24, 4, 6),
            (1, 32, 2, 3),
        ]
        outs[mode] = maps[2]
    assert not torch.allclose(outs["ignore"], outs["add"])


def test_variant_configs() -> None:
    with torch.device("meta"):
        base, large, hybrid = dpt_base(), dpt_large(), dpt_hybrid()
    assert base.backbone.channels == [96, 192, 384, 768] and base.backbone.vit_taps == [2, 5, 8, 11]
    assert large.backbone.channels == [256, 512, 1024, 1024] and large.backbone.vit_taps == [5, 11, 17, 23]
    assert hybrid.backbone.cnn_taps == [0, 1] and hybrid.backbone.vit_taps == [8, 11]
    resample = [type(r.resample).__name__ for r in base.backbone.reassemble]
    assert resample == ["ConvTranspose2d", "ConvTranspose2d", "Identity", "Conv2d"]
    assert base.backbone.reassemble[0].resample.kernel_size == (4, 4)
    assert base.backbone.reassemble[1].resample.kernel_size == (2, 2)
    assert large.head.fusions[3].skip_unit is None and large.head.fusions[0].skip_unit is not None


def test_other_input_sizes_resize_position_table() -> None:
    model = DPT(_tiny_vit(), DPTHead([8, 16, 24, 32], features=16)).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 96, 160)).shape == (2, 96, 160)
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 64, 64)


def test_depth_is_non_negative_unless_disabled() -> None:
    x = torch.randn(1, 3, 64, 64)
    torch.manual_seed(1)
    model = DPT(_tiny_vit(), DPTHead([8, 16, 24, 32], features=16)).eval()
    with torch.no_grad():
        model.head.output.conv3.bias.fill_(-0.05)
        out = model(x)
        model.head.output.non_negative = False
        raw = model(x)
    assert out.min() >= 0 and raw.min() < 0
    torch.testing.assert_close(out, raw.clamp(min=0))


def test_inverted_depth() -> None:
    torch.manual_seed(2)
    model = DPT(_tiny_vit(), DPTHead([8, 16, 24, 32], features=16), invert=True, scale=2.0, shift=0.5).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        depth = model(x)
        model.invert = False
        disparity = model(x)
    torch.testing.assert_close(depth, 1.0 / (2.0 * disparity + 0.5))


def test_segmentation_model_with_aux() -> None:
    model = DPT(_tiny_vit(), DPTHead([8, 16, 24, 32], features=16, task="segmentation", num_classes=5)).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        logits = model(x)
        main, aux = model.forward_with_aux(x)
        model.head.aux.classifier.weight.add_(1.0)  # the auxiliary head never influences forward()
        again = model(x)
    assert logits.shape == (1, 5, 64, 96) and aux is not None and aux.shape == (1, 5, 64, 96)
    torch.testing.assert_close(main, logits)
    torch.testing.assert_close(again, logits)
    assert isinstance(model.head.fusions[0].unit.bn1, nn.BatchNorm2d)
    assert model.head.fusions[0].unit.conv1.bias is None


# ------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------


def test_bad_input_errors() -> None:
    model = DPT(_tiny_vit(), DPTHead([8, 16, 24, 32], features=16)).eval()
    with pytest.raises(ValueError, match="3 input bands, got 4"):
        model(torch.zeros(1, 4, 64, 64))
    with pytest.raises(ValueError, match=r"divisible by 32, got 64x80.*pad_input"):
        model(torch.zeros(1, 3, 64, 80))
    with pytest.raises(ValueError, match=r"image batch \(B, 3, H, W\)"):
        model(torch.zeros(3, 64, 64))
    with pytest.raises(TypeError, match="normalised float image"):
        model(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(TypeError, match="uint8"):
        normalize(torch.zeros(1, 3, 8, 8))
    padded = DPT(model.backbone, model.head, pad_input=True).eval()
    with torch.no_grad():
        assert padded(torch.zeros(1, 3, 50, 80)).shape == (1, 50, 80)


def test_bad_configuration_errors() -> None:
    with pytest.raises(ValueError, match="channels"):
        DPT(_tiny_vit(), DPTHead([8, 16, 24, 64]))
    with pytest.raises(ValueError, match="four taps"):
        _tiny_vit(taps=(0, 1, 1))
    with pytest.raises(ValueError, match="out of range"):
        _tiny_vit(taps=(0, 1, 1, 5))
    with pytest.raises(ValueError, match="invert"):
        DPT(_tiny_vit(), DPTHead([8, 16, 24, 32], task="segmentation", num_classes=3), invert=True)
    with pytest.raises(ValueError, match="hybrid widths"):
        DPTViTBackbone(768, 1, 12, taps=(0, 1, 0, 0), widths=(64, 512, 768, 768), resnet_layers=(1, 1, 1))


def test_hybrid_stem_adaptation_keeps_the_rgb_model(reference_dir: Path) -> None:
    """Standardised stem: RGB (repeated for complete repeats) plus any leftover band gives the RGB output."""
    from timm.models import adapt_input_conv

    from rsvit.weights.fit import fit_to_model

    sd = convert_official_dpt_state_dict(official_fixture_state_dict(reference_dir))
    rgb_model = dpt_hybrid_reduced().eval()
    rgb_model.load_state_dict(sd)
    torch.manual_seed(3)
    rgb = torch.randn(1, 3, 32, 64)
    nir = 2.0 * torch.randn(1, 1, 32, 64)  # arbitrary content in the band the RGB kernel does not cover
    with torch.no_grad():
        expected = rgb_model(rgb)
    assert float(expected.abs().max()) > 1.0
    models = {}
    for bands, x in ((4, torch.cat([rgb, nir], 1)), (6, torch.cat([rgb, rgb], 1))):
        model = models[bands] = dpt_hybrid_reduced(in_chans=bands).eval()
        fitted, adapted, _ = fit_to_model(sd, model)
        assert adapted == ["backbone.vit.patch_embed.backbone.stem.conv.weight"]
        model.load_state_dict(fitted)
        with torch.no_grad():
            torch.testing.assert_close(model(x), expected, atol=1e-2, rtol=1e-3)
    # timm's plain rule ([R, G, B, R] x 3/4) is not output-preserving once the conv re-standardises.
    model = models[4]
    naive = dict(sd)
    naive[adapted[0]] = adapt_input_conv(4, sd[adapted[0]])
    model.load_state_dict(naive)
    with torch.no_grad():
        assert float((model(torch.cat([rgb, rgb[:, :1]], 1)) - expected).abs().max()) > 0.5
