import hashlib

import pytest

from irs.models import WeightsError, download, load_clip, load_sam, pick_device, sam_checkpoint
from irs.settings import SettingsError


def test_auto_device_on_this_machine_is_cpu_without_gpu():
    import torch

    expected = "cuda" if torch.cuda.is_available() else None
    assert pick_device("auto").type in ({expected} if expected else {"cpu", "mps"})
    assert pick_device("cpu").type == "cpu"


@pytest.fixture
def no_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def test_auto_without_a_gpu_is_cpu(no_gpu):
    assert pick_device("auto").type == "cpu"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("cuda", "torch sees no CUDA GPU (torch.cuda.is_available() is False); use auto or cpu"),
        ("cuda:0", "torch sees no CUDA GPU (torch.cuda.is_available() is False); use auto or cpu"),
        ("mps", "torch sees no MPS device (torch.backends.mps.is_available() is False); use auto or cpu"),
    ],
)
def test_a_device_torch_does_not_see_is_one_clear_line(no_gpu, name, message):
    with pytest.raises(SettingsError) as err:
        pick_device(name)
    assert str(err.value) == f"setting 'device': {name!r} asked for, but {message}"


def test_a_cuda_index_out_of_range(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert pick_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(
        SettingsError, match=r"^setting 'device': 'cuda:2' asked for, but torch sees 2 CUDA GPUs \(cuda:0"
    ):
        pick_device("cuda:2")


def test_an_unknown_device_name():
    with pytest.raises(SettingsError, match=r"^setting 'device': 'gpu' is not one of auto, cpu, cuda, cuda:N, mps$"):
        pick_device("gpu")


def test_missing_local_sam_checkpoint_names_the_file(tmp_path):
    with pytest.raises(WeightsError, match="nothere.pth not found"):
        sam_checkpoint("vit_b", str(tmp_path / "nothere.pth"), str(tmp_path))


def test_sam_checkpoint_that_cannot_be_downloaded_says_where_and_how(tmp_path, monkeypatch):
    monkeypatch.setattr("irs.models.SAM_CHECKPOINTS", {"vit_b": ("file:///nonexistent/sam_vit_b.pth", "0" * 64)})
    with pytest.raises(WeightsError) as err:
        sam_checkpoint("vit_b", "", str(tmp_path), progress=False)
    message = str(err.value)
    assert "sam_vit_b.pth" in message and str(tmp_path) in message and "IRS_SAM_CHECKPOINT" in message


def test_download_keeps_only_a_file_with_the_published_sha256(tmp_path):
    source = tmp_path / "weights.bin"
    source.write_bytes(b"weights" * 1000)
    good = hashlib.sha256(source.read_bytes()).hexdigest()
    with pytest.raises(WeightsError, match="does not match"):
        download(source.as_uri(), tmp_path / "cache" / "bad.bin", "f" * 64, progress=False)
    assert not (tmp_path / "cache" / "bad.bin").exists()
    path = download(source.as_uri(), tmp_path / "cache" / "good.bin", good, progress=False)
    assert path.read_bytes() == source.read_bytes()


def test_sam_checkpoint_loads_with_weights_only(tmp_path, monkeypatch):
    import torch

    from irs.models import build_tiny_sam

    ckpt = tmp_path / "tiny.pth"
    torch.save(build_tiny_sam(seed=1).state_dict(), ckpt)
    monkeypatch.setitem(
        __import__("segment_anything").sam_model_registry,
        "vit_tiny_test",
        lambda checkpoint=None: build_tiny_sam(seed=2),
    )
    sam = load_sam("vit_tiny_test", str(ckpt), str(tmp_path), "cpu")
    reference = build_tiny_sam(seed=1).state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in sam.state_dict().items())


def test_missing_clip_weights_file(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_clip("irs-tiny", str(tmp_path / "missing.pt"), "cpu")


def test_clip_tag_without_network_gives_one_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError) as err:
        load_clip("ViT-B-32", "laion2b_s34b_b79k", "cpu")
    message = str(err.value)
    assert "ViT-B-32 / laion2b_s34b_b79k" in message and "hub cache" in message and "IRS_CLIP_PRETRAINED" in message


def test_unknown_clip_model():
    with pytest.raises(WeightsError, match="unknown CLIP model"):
        load_clip("no-such-model", "", "cpu")
