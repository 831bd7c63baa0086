"""Graph datamodules: real Planetoid / MixHop files, the generator, loaders and errors."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lit_info.data import CitationGraphDataModule, HomophilyGraphDataModule
from lit_info.data.citation import edge_homophily, homophily_graph


@pytest.fixture(scope="module")
def planetoid(datasets_dir):
    return datasets_dir / "planetoid"


@pytest.mark.parametrize(
    ("name", "nodes", "edges", "features", "classes", "train"),
    [("Cora", 2708, 10556, 1433, 7, 140), ("CiteSeer", 3327, 9104, 3703, 6, 120)],
)
def test_planetoid_public_split(planetoid, name, nodes, edges, features, classes, train):
    dm = CitationGraphDataModule(name, data_dir=str(planetoid))
    assert dm.model_hints() == {"in_features": features, "num_classes": classes}
    dm.setup("fit")
    data = dm.data
    assert data.num_nodes == nodes and data.x.shape == (nodes, features)
    # undirected edges + one self loop per node, weights of D^-1/2 (A + I) D^-1/2
    assert data.edge_index.shape[1] == edges + nodes
    degree = torch.bincount(data.edge_index[1], minlength=nodes).double()
    src, dst = data.edge_index
    expected = (degree[src] * degree[dst]).rsqrt()
    torch.testing.assert_close(data.edge_weight.double(), expected, rtol=1e-6, atol=0)
    masks = data.train_mask, data.val_mask, data.test_mask
    assert [int(m.sum()) for m in masks] == [train, 500, 1000]
    assert not (masks[0] & masks[1]).any() and not (masks[1] & masks[2]).any()
    assert torch.bincount(data.y[data.train_mask]).tolist() == [20] * classes
    assert int(data.y.max()) + 1 == classes
    batch = next(iter(dm.train_dataloader()))
    assert batch is data  # full batch: the whole graph


def test_pubmed_without_allx_names_the_missing_file(planetoid):
    dm = CitationGraphDataModule("PubMed", data_dir=str(planetoid))
    assert dm.model_hints() == {"in_features": 500, "num_classes": 3}  # no file needed
    with pytest.raises(FileNotFoundError, match=r"ind\.pubmed\.allx") as err:
        dm.check_files()
    assert "ind.pubmed.graph" not in str(err.value)  # only the missing one is named
    with pytest.raises(FileNotFoundError, match=r"ind\.pubmed\.allx"):
        dm.setup("fit")


def test_missing_folder_and_bad_names(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"ind\.cora\.x.*download true"):
        CitationGraphDataModule("Cora", data_dir=str(tmp_path)).check_files()
    with pytest.raises(ValueError, match="one of Cora, CiteSeer, PubMed"):
        CitationGraphDataModule("cora")
    with pytest.raises(ValueError, match="batch_size"):
        CitationGraphDataModule("Cora", batch_size=0)
    with pytest.raises(ValueError, match="0.0, 0.1"):
        HomophilyGraphDataModule(homophily=0.55)
    with pytest.raises(FileNotFoundError, match=r"ind\.n5000-h0\.3-c10\.allx"):
        HomophilyGraphDataModule(homophily=0.3, data_dir=str(tmp_path)).check_files()
    # a damaged raw file: one line naming the folder
    raw = tmp_path / "Cora" / "raw"
    raw.mkdir(parents=True)
    for suffix in ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index"):
        (raw / f"ind.cora.{suffix}").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="cannot read Planetoid Cora"):
        CitationGraphDataModule("Cora", data_dir=str(tmp_path)).setup()


def test_full_batch_on_several_devices_points_to_batch_size(planetoid):
    dm = CitationGraphDataModule("Cora", data_dir=str(planetoid))
    dm.trainer = SimpleNamespace(world_size=2, global_rank=0)
    with pytest.raises(ValueError, match=r"--data.init_args.batch_size"):
        dm.setup("fit")


@pytest.mark.parametrize("h", [0.0, 0.5, 0.9])
def test_mixhop_synthetic_files(datasets_dir, h):
    dm = HomophilyGraphDataModule(homophily=h, data_dir=str(datasets_dir / "mixhop-synthetic"))
    dm.setup()
    data = dm.data
    assert data.num_nodes == 5000 and data.x.shape == (5000, 2)
    assert [int(m.sum()) for m in (data.train_mask, data.val_mask, data.test_mask)] == [1666] * 3
    torch.testing.assert_close(data.x.mean(0), torch.zeros(2), atol=1e-5, rtol=0)
    loops = data.edge_index[0] == data.edge_index[1]
    measured = edge_homophily(data.edge_index[:, ~loops], data.y)
    assert abs(measured - h) < 0.03, measured
    assert int(data.y.max()) + 1 == 10


@pytest.mark.parametrize("h", [0.1, 0.45, 0.8])
def test_generator_reaches_the_requested_homophily(h):
    x, y, edge_index = homophily_graph(1500, 5, h, edges_per_node=4, seed=1)
    assert abs(edge_homophily(edge_index, y) - h) < 0.04
    # undirected, no self loops, about edges_per_node per node
    a = set(map(tuple, edge_index.t().tolist()))
    assert all((j, i) in a for i, j in a) and all(i != j for i, j in a)
    assert abs(edge_index.shape[1] / 2 / 1500 - 4) < 0.1
    # class-conditional features: class means on a circle of radius 300
    means = np.stack([x[y == c].mean(0).numpy() for c in range(5)])
    np.testing.assert_allclose(np.linalg.norm(means, axis=1), 300, rtol=0.1)
    x2, y2, e2 = homophily_graph(1500, 5, h, edges_per_node=4, seed=1)
    assert torch.equal(x, x2) and torch.equal(y, y2) and torch.equal(edge_index, e2)


def test_minibatch_loaders_hold_complete_neighbourhoods():
    dm = HomophilyGraphDataModule(
        source="generate", num_nodes=300, num_classes=3, homophily=0.3, batch_size=16, num_hops=2
    )
    dm.setup()
    full = dm.data
    seen = []
    for batch in dm.val_dataloader():
        seeds = batch.n_id[: batch.batch_size]
        assert bool(full.val_mask[seeds].all())
        seen.append(seeds)
        # every seed keeps all its incoming edges (weights of the full graph)
        for local in range(batch.batch_size):
            node = int(batch.n_id[local])
            incoming = batch.edge_weight[batch.edge_index[1] == local].sort().values
            expected = full.edge_weight[full.edge_index[1] == node].sort().values
            torch.testing.assert_close(incoming, expected)
    seen = torch.cat(seen)
    assert seen.unique().numel() == seen.numel() == int(full.val_mask.sum())
