"""EG3D dataset.json reader (folder, zip, TFDS copy), mirroring, per-process shards, iterator resume."""
import json
import os
import pickle
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from jaxinv.data import eg3d_dataset as E
from jaxinv.data import synthetic as S

from conftest import fixture_dir

RES = 32  # decode + resize the 512^2 fixture crops to this: fast, and still exact comparisons


@pytest.fixture(scope="module")
def faces():
  return fixture_dir("faces")


def _json_labels(d):
  return {n: np.asarray(l, np.float32) for n, l in json.loads((d / "dataset.json").read_text())["labels"]}


def test_folder_reader_reproduces_dataset_json_labels(faces):
  ds = E.EG3DDataset(faces, resolution=RES)
  want = _json_labels(faces)
  assert sorted(ds.names) == sorted(want) and len(ds) == len(want)
  for i, name in enumerate(ds.names):
    np.testing.assert_array_equal(ds.raw_labels[i], want[name])
  rec = ds[3]
  assert rec["image"].shape == (RES, RES, 3) and rec["image"].dtype == np.uint8
  np.testing.assert_array_equal(rec["c"], want[rec["name"]])
  assert not rec["mirrored"] and rec["index"] == 3
  full = E.EG3DDataset(faces)[0]["image"]
  assert full.shape == (512, 512, 3)
  x = E.normalize_images(full)
  assert x.dtype == np.float32 and x.min() >= -1 and x.max() <= 1


def test_zip_reader_matches_the_folder(faces, tmp_path):
  names = ["goae_1.jpg", "goae_11.jpg", "triplanenet_example.png"]
  labels = json.loads((faces / "dataset.json").read_text())["labels"]
  zpath = tmp_path / "faces.zip"
  with zipfile.ZipFile(zpath, "w") as z:
    z.writestr("dataset.json", json.dumps({"labels": [l for l in labels if l[0] in names]}))
    for n in names:
      z.write(faces / n, n)
  zs, fs = E.EG3DDataset(zpath, resolution=RES), E.EG3DDataset(faces, resolution=RES)
  assert zs.names == tuple(sorted(names))
  for i, n in enumerate(zs.names):
    a, b = zs[i], fs[fs.names.index(n)]
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["c"], b["c"])
  # Picklable (worker processes reopen the zip), and threaded reads give the same batches.
  zs2 = pickle.loads(pickle.dumps(zs))
  np.testing.assert_array_equal(zs2[1]["image"], zs[1]["image"])
  kw = dict(seed=0, process_index=0, process_count=1)
  one = next(E.DataIterator(zs, 3, num_threads=1, **kw))
  many = next(E.DataIterator(zs2, 3, num_threads=3, **kw))
  for k in one:
    np.testing.assert_array_equal(one[k], many[k])


def test_reader_errors_are_clear(faces, tmp_path):
  with pytest.raises(FileNotFoundError, match="neither a folder nor a zip"):
    E.EG3DDataset(tmp_path / "nope")
  shutil.copy(faces / "goae_1.jpg", tmp_path / "a.jpg")
  with pytest.raises(FileNotFoundError, match="dataset.json"):
    E.EG3DDataset(tmp_path)
  (tmp_path / "dataset.json").write_text(json.dumps({"labels": [["b.jpg", [0.0] * 25]]}))
  with pytest.raises(ValueError, match="no label"):
    E.EG3DDataset(tmp_path)


def test_mirror_flips_the_image_and_the_yaw(faces):
  plain = E.EG3DDataset(faces, resolution=RES)
  ds = E.EG3DDataset(faces, resolution=RES, mirror=True)
  n = len(plain)
  assert len(ds) == 2 * n and ds.labels.shape == (2 * n, 25)
  for i in (0, 5, n - 1):
    a, m = ds[i], ds[n + i]
    assert m["mirrored"] and not a["mirrored"] and m["name"] == a["name"]
    np.testing.assert_array_equal(m["image"], a["image"][:, ::-1])
    np.testing.assert_array_equal(m["c"], np.asarray(S.flip_yaw(a["c"][None]))[0])
    np.testing.assert_array_equal(ds.labels[n + i], m["c"])
  yaw, pitch = map(np.asarray, S.pose_angles(ds.labels))
  np.testing.assert_allclose(yaw[n:], -yaw[:n], atol=1e-5)
  np.testing.assert_allclose(pitch[n:], pitch[:n], atol=1e-6)
  # The fixture's README table: goae_11 looks from yaw ~ +60 degrees, its mirror from ~ -60.
  k = plain.names.index("goae_11.jpg")
  assert np.degrees(yaw[k]) > 55 and np.degrees(yaw[n + k]) < -55


@pytest.mark.parametrize("n,p", [(13, 1), (13, 2), (13, 4), (26, 3), (5, 8)])
def test_static_shards_are_disjoint_and_complete(n, p):
  shards = [E.shard_indices(n, i, p) for i in range(p)]
  allidx = np.concatenate(shards)
  assert len(allidx) == n and np.array_equal(np.sort(allidx), np.arange(n))
  sizes = [len(s) for s in shards]
  assert max(sizes) - min(sizes) <= 1


class _Records:
  """A cheap source: record i is its own index."""

  def __init__(self, n):
    self.n = n

  def __len__(self):
    return self.n

  def __getitem__(self, i):
    return dict(image=np.full((2, 2, 3), i, np.uint8), c=np.full((25,), i, np.float32), index=i,
                mirrored=False)


@pytest.mark.parametrize("n,batch,procs", [(24, 8, 4), (26, 6, 2), (13, 4, 4)])
def test_process_rows_are_disjoint_complete_and_process_count_invariant(n, batch, procs):
  src = _Records(n)
  its = [E.DataIterator(src, batch, seed=3, process_index=p, process_count=procs)
         for p in range(procs)]
  one = E.DataIterator(src, batch, seed=3, process_index=0, process_count=1)
  assert its[0].batches_per_epoch == n // batch
  for epoch in range(2):
    seen = []
    for _ in range(n // batch):
      local = [next(it)["index"] for it in its]
      assert all(len(x) == batch // procs for x in local)
      np.testing.assert_array_equal(np.concatenate(local), next(one)["index"])
      seen.extend(np.concatenate(local).tolist())
    assert len(seen) == len(set(seen)) == (n // batch) * batch  # disjoint
    dropped = set(range(n)) - set(seen)
    assert len(dropped) == n % batch  # complete up to the fixed-shape remainder
    assert its[0].get_state()["epoch"] == epoch + 1


def test_epochs_reshuffle_and_unshuffled_is_in_order():
  src = _Records(12)
  it = E.DataIterator(src, 4, seed=0, process_index=0, process_count=1)
  assert not np.array_equal(it.permutation(0), it.permutation(1))
  it = E.DataIterator(src, 4, shuffle=False, process_index=0, process_count=1, num_epochs=1)
  np.testing.assert_array_equal(np.concatenate([b["index"] for b in it]), np.arange(12))


@pytest.mark.parametrize("prefetch", [False, True])
def test_iterator_state_round_trips_and_resume_is_exact(faces, prefetch):
  ds = E.EG3DDataset(faces, resolution=RES, mirror=True)  # 26 records, 3 batches of 8 an epoch
  kw = dict(seed=7, process_index=1, process_count=2)
  ref = E.DataIterator(ds, 8, **kw)
  ref_batches = [next(ref) for _ in range(7)]  # crosses two epoch boundaries
  for k in (0, 2, 3, 5):
    it = E.DataIterator(ds, 8, prefetch=prefetch, **kw)
    for _ in range(k):
      next(it)
    state = json.loads(json.dumps(it.get_state()))  # as a checkpoint would keep it
    assert set(state) == {"epoch", "position", "seed", "num_records", "global_batch_size"}
    # The loop peeks at one batch for its structure, then rewinds.
    resumed = E.DataIterator(ds, 8, seed=0, process_index=1, process_count=2, prefetch=prefetch)
    s0 = resumed.get_state()
    next(resumed)
    resumed.set_state(s0)
    resumed.set_state(state)  # the seed comes from the state
    for want in ref_batches[k:k + 2]:
      got = next(resumed)
      for key in ("image", "c", "index", "mirrored"):
        np.testing.assert_array_equal(got[key], want[key])
  assert ref_batches[0]["image"].shape == (4, RES, RES, 3)
  assert ref_batches[0]["c"].shape == (4, 25) and ref_batches[0]["c"].dtype == np.float32
  with pytest.raises(ValueError, match="global batches"):
    E.DataIterator(ds, 4, **kw).set_state(ref.get_state())


def test_iterator_argument_errors():
  with pytest.raises(ValueError, match="multiple of process_count"):
    E.DataIterator(_Records(10), 5, process_index=0, process_count=2)
  with pytest.raises(ValueError, match="fewer than one global batch"):
    E.DataIterator(_Records(3), 4, process_index=0, process_count=1)
  with pytest.raises(ValueError, match="process_index"):
    E.DataIterator(_Records(10), 4, process_index=2, process_count=2)


# ------------------------------------------------------------------ TFDS copy (no TensorFlow)


@pytest.fixture(scope="module")
def tfds_copy(faces, tmp_path_factory):
  from jaxinv.data import tfds_eg3d
  data_dir = tmp_path_factory.mktemp("tfds")
  tfds_eg3d.build_tfds(faces, data_dir, name="faces_fixture")
  return data_dir


def test_tfds_copy_has_the_same_records_and_needs_no_tensorflow(faces, tfds_copy):
  from jaxinv.data import tfds_eg3d
  src = tfds_eg3d.TFDSEG3D("faces_fixture", tfds_copy, mirror=True, resolution=RES)
  ref = E.EG3DDataset(faces, mirror=True, resolution=RES)
  assert len(src) == len(ref)
  assert sorted(src.names) == sorted(ref.names)
  want = _json_labels(faces)
  for i, name in enumerate(src.names):
    np.testing.assert_array_equal(src.raw_labels[i], want[name])
  n = len(ref.names)
  for name in ("goae_1.jpg", "triplanenet_example.png"):
    i, j = src.names.index(name), ref.names.index(name)
    for off in (0, n):  # plain and mirrored
      a, b = src[i + off], ref[j + off]
      assert a["name"] == b["name"] and a["mirrored"] == b["mirrored"]
      np.testing.assert_array_equal(a["image"], b["image"])
      np.testing.assert_array_equal(a["c"], b["c"])
  it = E.DataIterator(src, 4, seed=1, process_index=0, process_count=1)
  batch = next(it)
  assert batch["image"].shape == (4, RES, RES, 3) and batch["c"].shape == (4, 25)
  # Building again reuses the copy.
  tfds_eg3d.build_tfds(faces, tfds_copy, name="faces_fixture")


def test_reading_the_tfds_copy_imports_no_tensorflow(tfds_copy):
  code = ("import sys; from jaxinv.data import tfds_eg3d; "
          f"s = tfds_eg3d.TFDSEG3D('faces_fixture', {str(tfds_copy)!r}); s[0]; len(s.names); "
          "sys.exit(1 if 'tensorflow' in sys.modules else 0)")
  r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                     env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]


# ------------------------------------------------------------------ writer, in-memory source, train_iterator


@pytest.mark.parametrize("suffix", ["", ".zip"])
def test_written_dataset_reads_back_exactly(tmp_path, suffix):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
  labels = np.asarray(S.look_at_labels(np.linspace(-0.5, 0.5, 5), np.zeros(5)))
  path = E.write_eg3d_dataset(str(tmp_path / "ds") + suffix, images, labels)
  ds = E.EG3DDataset(path, mirror=True)
  mem = E.ArraySource(images, labels, mirror=True)
  assert len(ds) == len(mem) == 10 and ds.names == mem.names
  for i in range(10):
    a, b = ds[i], mem[i]
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["c"], b["c"])
    assert a["mirrored"] == b["mirrored"] == (i >= 5)
  np.testing.assert_array_equal(ds.labels, mem.labels)


def test_train_iterator_reads_config_data_and_resumes(faces):
  import ml_collections

  import jaxinv.data
  cfg = ml_collections.ConfigDict(dict(seed=4, data=dict(path=str(faces), mirror=True,
                                                         resolution=RES)))
  it = jaxinv.data.train_iterator(cfg, task_name="t", batch_size=3, process_index=1,
                                  process_count=2)
  assert it.global_batch_size == 6 and len(it.source) == 26
  b0 = next(it)
  assert b0["image"].dtype == np.float32 and b0["image"].shape == (3, RES, RES, 3)
  assert b0["image"].min() >= -1 and b0["image"].max() <= 1
  state = it.get_state()
  b1 = next(it)
  it.set_state(state)
  np.testing.assert_array_equal(next(it)["image"], b1["image"])


def test_train_iterator_without_a_path_uses_the_world_stand_in():
  import ml_collections

  import jaxinv.data
  cfg = ml_collections.ConfigDict(dict(seed=0, data=dict(path="", stand_in_size=4, resolution=16)))
  it = jaxinv.data.train_iterator(cfg, batch_size=2)
  b = next(it)
  assert b["image"].shape == (2, 16, 16, 3) and b["c"].shape == (2, 25)
  assert np.isfinite(b["image"]).all() and b["image"].std() > 0.05  # a real picture, not a constant
  from jaxinv.render import camera as cam
  cam.validate_label(b["c"])
