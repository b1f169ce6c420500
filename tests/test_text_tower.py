import copy
import dataclasses
import logging
import threading

import numpy as np
import pytest
import torch
from PIL import Image

import irs.embed
from irs.embed import Embedder
from irs.models import load_clip
from irs.text_tower import Int8Linear, _cpu_has_vnni, can_quantize_text, one_thread

TEXTS = ["", "dog", "a red circle on the left", "a dog to the left of a bicycle", "a photo of " + "very " * 100 + "car"]


@pytest.fixture(scope="module")
def tiny():
    return load_clip("irs-tiny", "", "cpu")


@pytest.mark.parametrize("name", ["irs-tiny", "irs-small"])
def test_int8_queries_point_where_float32_ones_do_and_leave_images_and_model_alone(name):
    """text_dtype int8: query vectors within 5e-3 cosine of float32's (each query's own float32 vector the
    nearest), image vectors bit-identical, the model's own layers untouched."""
    model = load_clip(name, "", "cpu")
    exact, fast = Embedder(model), Embedder(model, text_dtype="int8")
    assert fast._int8_tower is not None
    a, b = exact.texts(TEXTS), fast.texts(TEXTS)
    cosines = (a * b).sum(axis=1)
    assert cosines.min() > 0.995 and not np.array_equal(a, b)  # int8 arithmetic did run
    assert (np.argmax(b @ a.T, axis=1) == np.arange(len(TEXTS))).all()
    block = model.model.transformer.resblocks[0]
    assert isinstance(block.attn, torch.nn.MultiheadAttention) and block.mlp.c_fc.weight.dtype == torch.float32
    images = [Image.new("RGB", (40, 30), c) for c in [(255, 0, 0), (0, 120, 255)]]
    assert np.array_equal(exact.images(images), fast.images(images))


def test_a_text_gets_the_same_int8_vector_alone_or_with_others(tiny):
    """Inputs are quantised with one scale per call: texts are encoded one by one, so the cache never holds a
    vector that depended on what was searched with it."""
    alone = Embedder(tiny, text_dtype="int8").texts(["a dog"])[0]
    batched = Embedder(tiny, text_dtype="int8").texts(["a photo of " + "very " * 30 + "red car", "a dog"])[1]
    assert np.array_equal(alone, batched)


def test_without_int8_kernels_queries_run_in_float32_with_a_warning(tiny, monkeypatch, caplog):
    def missing(model: torch.nn.Module) -> torch.nn.Module:
        raise RuntimeError("Didn't find engine for operation quantized::linear_prepack NoQEngine")

    monkeypatch.setattr(irs.embed, "int8_text_tower", missing)
    with caplog.at_level(logging.WARNING):
        fast = Embedder(tiny, text_dtype="int8")
        assert fast._int8_tower is None
    assert "text_dtype int8 is not available here" in caplog.text and "float32" in caplog.text
    assert np.array_equal(fast.texts(TEXTS), Embedder(tiny).texts(TEXTS))


def test_an_int8_tower_that_moves_the_probe_query_too_far_is_not_used(tiny, monkeypatch, caplog):
    monkeypatch.setattr(irs.embed, "INT8_PROBE_COSINE", 1.5)  # no tower can pass: stands for broken kernels
    with caplog.at_level(logging.WARNING):
        fast = Embedder(tiny, text_dtype="int8")
        assert fast._int8_tower is None
    assert "moved a probe query" in caplog.text
    assert np.array_equal(fast.texts(["a dog"]), Embedder(tiny).texts(["a dog"]))


def test_towers_int8_cannot_copy_keep_float32(tiny, caplog):
    cross = copy.deepcopy(tiny.model)
    cross.transformer.resblocks[0].ln_1_kv = torch.nn.LayerNorm(8)
    no_mlp = copy.deepcopy(tiny.model)
    no_mlp.transformer.resblocks[-1].mlp = torch.nn.Identity()
    extra_keys = copy.deepcopy(tiny.model)
    block = extra_keys.transformer.resblocks[0]
    width, heads = block.attn.embed_dim, block.attn.num_heads
    block.attn = torch.nn.MultiheadAttention(width, heads, add_bias_kv=True, batch_first=block.attn.batch_first)
    assert can_quantize_text(tiny.model)
    assert not can_quantize_text(cross) and not can_quantize_text(no_mlp) and not can_quantize_text(extra_keys)
    assert not can_quantize_text(torch.nn.Linear(2, 2))
    emb = Embedder(tiny, text_dtype="int8")
    emb.clip = dataclasses.replace(tiny, model=no_mlp)
    with caplog.at_level(logging.WARNING):
        assert emb._int8_text_tower() is None
    assert "needs an open_clip text tower on a CPU" in caplog.text


@pytest.mark.parametrize("reduce_range", [False, True])
def test_an_int8_linear_layer_is_close_to_the_float_one(reduce_range):
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 48)
    x = torch.randn(5, 7, 64)
    exact = layer(x).detach()
    fast = Int8Linear(layer.weight, layer.bias, reduce_range)(x)
    assert fast.shape == exact.shape
    relative = (fast - exact).norm() / exact.norm()
    assert relative < (0.03 if reduce_range else 0.015)


def test_vnni_is_read_from_the_cpu_flags(tmp_path):
    with_vnni, without = tmp_path / "with", tmp_path / "without"
    with_vnni.write_text("flags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n")
    without.write_text("flags\t\t: fpu sse2 avx2 avx512f avx512vl\n")
    assert _cpu_has_vnni(with_vnni) and not _cpu_has_vnni(without)
    assert not _cpu_has_vnni(tmp_path / "missing")


def test_one_thread_inside_for_the_calling_thread_only_and_the_given_count_after():
    before = torch.get_num_threads()
    entered, release = threading.Event(), threading.Event()
    seen: list[int] = []

    def other() -> None:
        with one_thread(before):
            seen.append(torch.get_num_threads())
            entered.set()
            release.wait(5)
        seen.append(torch.get_num_threads())

    def late() -> None:  # starts while `other` is inside: begins with 1, and must not leave 1 behind
        with one_thread(before):
            pass
        seen.append(torch.get_num_threads())

    worker = threading.Thread(target=other)
    worker.start()
    entered.wait(5)
    assert torch.get_num_threads() == before  # this thread's work keeps its threads
    latecomer = threading.Thread(target=late)
    latecomer.start()
    latecomer.join(5)
    release.set()
    worker.join(5)
    assert seen == [1, before, before]
    fresh: list[int] = []
    starter = threading.Thread(target=lambda: fresh.append(torch.get_num_threads()))
    starter.start()
    starter.join(5)
    assert fresh == [before]  # threads started from now on get the process's count
    with pytest.raises(ValueError), one_thread(before):
        raise ValueError("an error inside")
    assert torch.get_num_threads() == before


def test_the_default_runs_queries_in_int8_on_a_cpu_and_says_nothing_when_it_cannot(tiny, monkeypatch, caplog):
    from irs.settings import load_settings

    assert load_settings({}, environ={}).text_dtype == "auto"
    assert load_settings({"profile": "test"}, environ={}).text_dtype == "float32"
    assert load_settings({}, environ={"IRS_TEXT_DTYPE": "int8"}).text_dtype == "int8"
    assert Embedder(tiny, text_dtype="auto")._int8_tower is not None
    assert Embedder(tiny)._int8_tower is None  # code that builds an Embedder itself gets exact float32
    monkeypatch.setattr(irs.embed, "INT8_PROBE_COSINE", 1.5)
    with caplog.at_level(logging.WARNING):
        assert Embedder(tiny, text_dtype="auto")._int8_tower is None
    assert caplog.text == ""  # auto falls back quietly; an explicit int8 warns (above)
