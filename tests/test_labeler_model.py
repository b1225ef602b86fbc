"""MaskLabeler: encoders (ViT / ConvNeXt / Swin), size buckets, checkpoints, local pretrained weights."""

import pytest
import torch
from safetensors.torch import save_file

from mal.labeler.decoder import size_bucket
from mal.labeler.model import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_labeler,
    load_labeler,
    normalize,
    resolve_cfg,
    save_checkpoint,
)

TINY = {"encoder": "vit_tiny_patch16_224", "crop_size": 64, "decoder_dim": 32}


def test_size_bucket_boundaries_have_no_gap():
    areas = torch.tensor([0.0, 1023.9, 1024.0, 9215.9, 9216.0, 1e6])
    assert size_bucket(areas).tolist() == [0, 0, 1, 1, 2, 2]


def test_vit_forward_shape_and_grid():
    torch.manual_seed(0)
    m = build_labeler(TINY).eval()
    x = torch.randn(3, 3, 64, 64)
    assert m.encoder(x).shape == (3, 192, 4, 4)  # prefix (cls) token dropped, 64/16 = 4
    assert m(x, torch.tensor([10.0, 2000.0, 20000.0])).shape == (3, 1, 16, 16)
    with pytest.raises(ValueError, match="expects"):
        m(torch.randn(1, 3, 32, 32), torch.tensor([1.0]))


def test_mixed_bucket_batch_equals_per_sample():
    torch.manual_seed(0)
    m = build_labeler(TINY).eval()
    x = torch.randn(3, 3, 64, 64)
    areas = torch.tensor([100.0, 5000.0, 20000.0])
    with torch.no_grad():
        batch = m(x, areas)
        single = torch.cat([m(x[i : i + 1], areas[i : i + 1]) for i in range(3)])
        no_rescale = build_labeler({**TINY, "bucket_rescale": False})
        no_rescale.load_state_dict(m.state_dict())
        plain = no_rescale.eval()(x, areas)
    assert torch.allclose(batch, single, atol=1e-5)
    assert torch.allclose(batch[1], plain[1], atol=1e-5)  # medium = x1
    assert not torch.allclose(batch[0], plain[0], atol=1e-3)  # small = x0.5 changes the result


@pytest.mark.parametrize("name", ["convnext_atto", "swin_tiny_patch4_window7_224"])
def test_hierarchical_encoders_give_nchw_grids(name):
    m = build_labeler({"encoder": name, "crop_size": 64, "decoder_dim": 16}).eval()
    with torch.no_grad():
        grid = m.encoder(torch.randn(1, 3, 64, 64))
        out = m(torch.randn(1, 3, 64, 64), torch.tensor([5000.0]))
    assert grid.shape == (1, m.encoder.out_channels, 2, 2)  # stride 32, channels first (Swin is NHWC inside)
    assert out.shape == (1, 1, 16, 16)


def test_cfg_validation():
    assert resolve_cfg({"crop_size": 96})["mask_size"] == 24
    with pytest.raises(ValueError, match="labeler model cfg: crop: unknown key"):
        resolve_cfg({"crop": 64})
    with pytest.raises(ValueError, match="pretrained"):
        build_labeler({**TINY, "pretrained": 3})


def test_encoder_args_reach_timm_and_survive_the_checkpoint(tmp_path):
    cfg = {**TINY, "encoder_args": {"patch_size": 8}}
    m = build_labeler(cfg).eval()
    x = torch.randn(2, 3, 64, 64)
    assert m.encoder(x).shape == (2, 192, 8, 8)  # 64 / 8: a finer token grid than patch 16's 4 x 4
    save_checkpoint(tmp_path / "p8.pt", m, None, m.cfg)
    loaded, loaded_cfg = load_labeler(tmp_path / "p8.pt")
    assert loaded_cfg["encoder_args"] == {"patch_size": 8}
    with torch.no_grad():
        assert torch.equal(loaded(x), m(x))
    assert resolve_cfg(TINY)["encoder_args"] == {}  # old checkpoints (no key) keep patch 16
    with pytest.raises(ValueError, match="encoder_args: expected a valid dictionary"):
        resolve_cfg({**TINY, "encoder_args": [8]})


def test_normalize():
    img = torch.full((2, 4, 4, 3), 255, dtype=torch.uint8)
    out = normalize(img)
    assert out.shape == (2, 3, 4, 4) and out.dtype == torch.float32
    assert out[0, 0, 0, 0].item() == pytest.approx((1 - IMAGENET_MEAN[0]) / IMAGENET_STD[0], rel=1e-6)
    assert normalize(img[0].numpy()).shape == (1, 3, 4, 4)


def test_checkpoint_roundtrip(tmp_path):
    torch.manual_seed(0)
    student, teacher = build_labeler(TINY), build_labeler(TINY)
    path = tmp_path / "sub" / "checkpoint.pt"
    save_checkpoint(path, student, teacher, student.cfg, {"epoch": 3, "note": "x"})
    assert not list(path.parent.glob("*.tmp"))  # atomic: no temp left behind
    model, cfg = load_labeler(path, "teacher")
    assert cfg["crop_size"] == 64 and not model.training
    for k, v in teacher.state_dict().items():
        assert torch.equal(model.state_dict()[k], v)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["epoch"] == 3 and set(ckpt) >= {"student", "teacher", "cfg", "epoch"}


def test_checkpoint_load_errors(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_labeler(tmp_path / "missing.pt")
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match=str(bad)):
        load_labeler(bad)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(1)}, other)
    with pytest.raises(ValueError, match="not a labeler checkpoint"):
        load_labeler(other)
    m = build_labeler(TINY)
    save_checkpoint(tmp_path / "ok.pt", m, None, m.cfg)
    with pytest.raises(ValueError, match="no 'teacher'"):
        load_labeler(tmp_path / "ok.pt", "teacher")
    with pytest.raises(ValueError, match="which"):
        load_labeler(tmp_path / "ok.pt", "both")


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_pretrained_file_with_pos_embed_resample(tmp_path, suffix):
    torch.manual_seed(1)
    src = build_labeler({**TINY, "crop_size": 32}).encoder.model  # 2x2 grid; the target uses 4x4
    state = {k: v.clone() for k, v in src.state_dict().items()}
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"model": state}, path)  # MAE-style wrapper key
    m = build_labeler({**TINY, "pretrained": str(path)})
    tgt = m.encoder.model.state_dict()
    assert torch.equal(tgt["blocks.0.attn.qkv.weight"], state["blocks.0.attn.qkv.weight"])
    assert tgt["pos_embed"].shape == (1, 1 + 16, 192)  # resampled to the crop size
    with pytest.raises(ValueError, match="not found"):
        build_labeler({**TINY, "pretrained": str(tmp_path / "nope.pth")})


def test_convnet_stride16_features_load_a_full_classifier_file(tmp_path):
    """encoder_args {features_only, out_indices: [3]}: EfficientNet-Lite0's stride-16 map (8 x 8 at 128 px, like
    a ViT/16) from a whole ImageNet classifier file, every backbone weight loaded (only the head is left out)."""
    import timm

    from mal.labeler.encoder import Encoder

    full = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    path = tmp_path / "lite0.safetensors"
    save_file({k: v.contiguous() for k, v in full.state_dict().items()}, str(path))
    enc = Encoder("tf_efficientnet_lite0", 128, str(path), features_only=True, out_indices=[3])
    assert enc.out_channels == 112
    for name, tensor in enc.model.state_dict().items():
        assert torch.equal(tensor, full.state_dict()[name]), name
    assert enc(torch.randn(2, 3, 128, 128)).shape == (2, 112, 8, 8)
    assert enc.data_config["mean"] == (0.5, 0.5, 0.5)  # the weights' own normalisation, not ImageNet's
