r"""Node classification on graphs: Planetoid citation graphs and synthetic homophily graphs.

* :class:`CitationGraphDataModule`: Cora, CiteSeer, PubMed in the Planetoid format with the
  public split (20 labelled nodes per class, 500 validation, 1000 test), read by
  torch-geometric's ``read_planetoid_data`` from ``<data_dir>/<Name>/raw/`` (the layout of
  ``torch_geometric.datasets.Planetoid``). Nothing is downloaded and nothing is written into
  ``data_dir`` unless ``download: true`` (then ``Planetoid`` downloads and processes there).
* :class:`HomophilyGraphDataModule`: the MixHop paper's synthetic graphs of homophily ``h``
  (5,000 nodes, 10 classes, 2-D Gaussian features, split in thirds), read from the raw files of
  ``torch_geometric.datasets.MixHopSyntheticDataset`` (``<data_dir>/<h without the dot>/raw/``)
  or generated for any size and homophily by :func:`homophily_graph`.

Items. Every loader yields torch-geometric ``Data`` objects holding ``x`` (``N x F``), ``y``,
the graph as ``Â = D^-1/2 (A + I) D^-1/2`` in ``edge_index`` / ``edge_weight`` (self loops
included, weights of the full graph), the boolean ``train_mask`` / ``val_mask`` / ``test_mask``
and ``n_id`` (the nodes' indices in the full graph: per-node results can be put back in order).

* Full batch (``batch_size: null``, default): the whole graph, one batch per epoch, for every
  split (the model picks the split's nodes with its mask). The graph is moved to the device
  once and reused.
* Mini-batch (``batch_size: B``): batches of ``B`` seed nodes of the split with their
  complete ``num_hops``-hop neighbourhoods (:class:`KHopCollate`; ``num_hops`` = the
  highest adjacency power times the number of layers makes the seeds' outputs equal to the
  full graph's); the seeds come first and ``batch.batch_size`` counts them. Under DDP each
  process trains on its shard of the training nodes (a ``DistributedSampler``) and evaluates a
  disjoint shard of the validation / test nodes (no padding: metrics count each node once).
  Full batch on several devices is refused with an error that points to ``batch_size``.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm.auto import tqdm

from lit_info.data.samplers import ShardSampler
from lit_info.nets.graph import normalized_adjacency

if TYPE_CHECKING:
    from torch_geometric.data import Data

PLANETOID_NAMES = ("Cora", "CiteSeer", "PubMed")
#: ``(num_features, num_classes)`` of the Planetoid graphs, so hints need no file.
PLANETOID_SHAPES = {"Cora": (1433, 7), "CiteSeer": (3703, 6), "PubMed": (500, 3)}
PLANETOID_SUFFIXES = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")


def _data_dir(data_dir: str | os.PathLike | None) -> Path:
    return Path(data_dir or os.environ.get("LIT_INFO_DATA", "./data"))


def planetoid_raw_files(root: Path, name: str) -> list[Path]:
    """The 8 raw files of Planetoid graph ``name`` under ``root`` (``<root>/<Name>/raw/``)."""
    return [root / name / "raw" / f"ind.{name.lower()}.{s}" for s in PLANETOID_SUFFIXES]


def homophily_raw_files(root: Path, homophily: float) -> list[Path]:
    """The 3 raw files of the MixHop synthetic graph of homophily ``h`` under ``root``."""
    stem = f"ind.n5000-h{homophily:0.1f}-c10"
    folder = root / f"{homophily:0.1f}".replace(".", "") / "raw"
    return [folder / f"{stem}.{s}" for s in ("allx", "ally", "graph")]


def _missing_files_error(files: list[Path], what: str, hint: str) -> FileNotFoundError:
    missing = [str(f) for f in files if not f.is_file()]
    return FileNotFoundError(
        f"{what}: missing raw file(s) {', '.join(missing)}; {hint} (nothing is downloaded "
        "unless --data.init_args.download true)"
    )


def _symmetrize(edge_index: Tensor, num_nodes: int) -> Tensor:
    from torch_geometric.utils import remove_self_loops, to_undirected

    edge_index, _ = remove_self_loops(edge_index)
    return to_undirected(edge_index, num_nodes=num_nodes)


# -- synthetic homophily graphs ------------------------------------------------------------------
def homophily_graph(
    num_nodes: int = 5000,
    num_classes: int = 10,
    homophily: float = 0.5,
    edges_per_node: int = 6,
    seed: int = 0,
    progress: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    r"""A graph of given homophily by preferential attachment, with 2-D Gaussian features.

    The generator of the MixHop paper's synthetic graphs (its section 5.1, after Karimi et al.:
    a Barabási-Albert graph whose attachment prefers same-class nodes): nodes arrive one at a
    time with a uniformly random class and attach to ``edges_per_node`` distinct earlier nodes
    ``v`` drawn with probability proportional to ``deg(v) + 1`` times ``h`` if ``v`` has the
    new node's class and ``(1 - h) / (C - 1)`` otherwise (so about a fraction ``h`` of the edges
    join same-class nodes). The first ``edges_per_node + 1`` nodes form a clique. Features as the
    authors' ``make_x.py``: class ``c`` is a 2-D Gaussian centred at radius 300, angle
    ``2 pi c / C``, with covariance ``diag(70, 20) * 350`` rotated by ``2 pi / C`` per class.

    Args:
        num_nodes: N.
        num_classes: C.
        homophily: h in [0, 1].
        edges_per_node: Edges each arriving node adds (the files: 6, ~29,800 edges at N = 5000).
        seed: Random seed (numpy ``default_rng``).
        progress: Show a progress bar over the nodes.

    Returns:
        ``x`` (``N x 2`` float32), ``y`` (``N`` int64), ``edge_index`` (undirected, both
        directions).
    """
    if not 0.0 <= homophily <= 1.0:
        raise ValueError(f"homophily must be in [0, 1], got {homophily}")
    if num_classes < 2 or edges_per_node < 1 or num_nodes <= edges_per_node + 1:
        raise ValueError(
            f"need num_classes >= 2, edges_per_node >= 1 and num_nodes > edges_per_node + 1; "
            f"got {num_classes}, {edges_per_node}, {num_nodes}"
        )
    rng = np.random.default_rng(seed)
    y = rng.integers(num_classes, size=num_nodes)
    degree = np.zeros(num_nodes)
    sources: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    start = edges_per_node + 1
    for a in range(start):
        for b in range(a + 1, start):
            sources.append(np.array([a]))
            targets.append(np.array([b]))
    degree[:start] = edges_per_node
    other = (1.0 - homophily) / (num_classes - 1)
    for node in tqdm(range(start, num_nodes), disable=not progress, desc="homophily graph"):
        affinity = np.where(y[:node] == y[node], homophily, other)
        weights = (degree[:node] + 1.0) * affinity
        total = weights.sum()
        if total <= 0:  # h = 1 and no earlier node of this class: attach by degree alone
            weights, total = degree[:node] + 1.0, (degree[:node] + 1.0).sum()
        positive = int(np.count_nonzero(weights))
        count = min(edges_per_node, positive)
        chosen = rng.choice(node, size=count, replace=False, p=weights / total)
        sources.append(np.full(count, node))
        targets.append(chosen)
        degree[chosen] += 1
        degree[node] += count
    src, dst = np.concatenate(sources), np.concatenate(targets)
    edge_index = _symmetrize(torch.from_numpy(np.stack([src, dst])).long(), num_nodes)
    # features as make_x.py: one rotated anisotropic Gaussian per class around a circle
    x = np.zeros((num_nodes, 2))
    cov = np.diag([70.0, 20.0]) * 350.0
    theta = 2 * np.pi / num_classes
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    for c in range(num_classes):
        angle = 2 * np.pi * c / num_classes
        members = np.flatnonzero(y == c)
        centre = [300.0 * np.sin(angle), 300.0 * np.cos(angle)]
        x[members] = rng.multivariate_normal(centre, cov, size=members.size)
        cov = rotation.T @ cov @ rotation
    return torch.from_numpy(x).float(), torch.from_numpy(y).long(), edge_index


def edge_homophily(edge_index: Tensor, y: Tensor) -> float:
    """Fraction of edges that join two nodes of the same class."""
    return float((y[edge_index[0]] == y[edge_index[1]]).float().mean())


# -- loaders -----------------------------------------------------------------------------------
class _WholeGraph(Dataset):
    """A dataset of one item: the whole graph (``batch_size=None`` loaders yield it as is)."""

    def __init__(self, data: Data):
        self.data = data

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> Data:
        return self.data


class _Seeds(Dataset):
    """The seed nodes of one split (items: node indices)."""

    def __init__(self, nodes: Tensor):
        self.nodes = nodes

    def __len__(self) -> int:
        return self.nodes.numel()

    def __getitem__(self, index: int) -> int:
        return int(self.nodes[index])


class KHopCollate:
    """Collate seed nodes into their complete ``num_hops``-hop neighbourhood, seeds first.

    torch-geometric's ``k_hop_subgraph`` (every node with a path of at most ``num_hops`` edges
    into a seed, and every edge among them) with the full graph's edge weights; a node closer
    than ``num_hops`` to a seed keeps all its incoming edges, so a model whose receptive field
    is ``num_hops`` deep computes the seeds' full-graph outputs. The batch carries ``n_id``
    (indices in the full graph), ``batch_size`` (the number of seeds, first in ``n_id``) and
    the masks of its nodes.

    (torch-geometric's ``NeighborLoader`` does the same with ``num_neighbors=[-1] * k`` but its
    sampler needs ``pyg-lib`` or ``torch-sparse``, compiled extensions that PyPI does not offer
    for current torch versions; ``k_hop_subgraph`` is pure torch. It scans the edge list once
    per hop and batch, ``O(num_hops * E)``.)

    Args:
        data: The full graph.
        num_hops: Neighbourhood depth.
    """

    def __init__(self, data: Data, num_hops: int):
        self.data = data
        self.num_hops = num_hops

    def __call__(self, seeds: list[int]) -> Data:
        """The subgraph batch of these seed nodes."""
        from torch_geometric.data import Data
        from torch_geometric.utils import k_hop_subgraph

        data = self.data
        seed_index = torch.as_tensor(seeds, dtype=torch.long)
        subset, _, _, edge_mask = k_hop_subgraph(
            seed_index, self.num_hops, data.edge_index, num_nodes=data.num_nodes
        )
        # order: the seeds first (in the given order), then the other nodes
        is_seed = torch.zeros(data.num_nodes, dtype=torch.bool)
        is_seed[seed_index] = True
        order = torch.cat([seed_index, subset[~is_seed[subset]]])
        position = torch.full((data.num_nodes,), -1, dtype=torch.long)
        position[order] = torch.arange(order.numel())
        batch = Data(
            x=data.x[order],
            y=data.y[order],
            edge_index=position[data.edge_index[:, edge_mask]],
            edge_weight=data.edge_weight[edge_mask],
            n_id=order,
            num_nodes=order.numel(),
        )
        for split in ("train", "val", "test"):
            batch[f"{split}_mask"] = data[f"{split}_mask"][order]
        batch.batch_size = seed_index.numel()
        return batch


class GraphDataModule(pl.LightningDataModule):
    """Shared loaders of the graph datamodules (see the module docstring).

    Args:
        batch_size: Seed nodes per mini-batch; ``None`` = full batch.
        num_hops: Neighbourhood depth of a mini-batch (highest power x number of layers).
        num_workers: Loader worker processes (mini-batch only).
        predict_split: Nodes whose predictions ``predict`` returns: train, val, test or all.
    """

    def __init__(
        self,
        batch_size: int | None = None,
        num_hops: int = 4,
        num_workers: int = 0,
        predict_split: Literal["train", "val", "test", "all"] = "all",
    ):
        super().__init__()
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or null (full batch), got {batch_size}")
        if num_hops < 1:
            raise ValueError(f"num_hops must be >= 1, got {num_hops}")
        self.batch_size = batch_size
        self.num_hops = num_hops
        self.num_workers = num_workers
        self.predict_split = predict_split
        self.data: Data | None = None
        self._device_graph: tuple[torch.device, Data] | None = None

    # subclasses
    def load_graph(self) -> Data:
        """Read or build the graph (``x``, ``y``, undirected ``edge_index``, the masks)."""
        raise NotImplementedError

    def check_files(self) -> None:
        """Fail before anything is written when input files are missing (subclasses)."""

    @property
    def shape(self) -> tuple[int, int]:
        """``(num_features, num_classes)`` without reading the data where possible."""
        data = self._graph()
        return int(data.x.shape[1]), int(data.y.max()) + 1

    def model_hints(self) -> dict[str, int]:
        """``{"in_features": F, "num_classes": C}`` for the model."""
        features, classes = self.shape
        return {"in_features": features, "num_classes": classes}

    # shared
    def _graph(self) -> Data:
        if self.data is None:
            data = self.load_graph()
            data.x = data.x.to(torch.get_default_dtype())
            data.edge_index, data.edge_weight = normalized_adjacency(
                data.edge_index, data.num_nodes
            )
            data.n_id = torch.arange(data.num_nodes)
            self.data = data
        return self.data

    def setup(self, stage: str | None = None) -> None:
        """Load the graph (once) and refuse full batch on several processes."""
        self._graph()
        if self.trainer is not None:
            self.check_trainer(self.trainer)

    def check_trainer(self, trainer: Any) -> None:
        """Refuse full batch on several processes (the CLI calls this before writing anything).

        Raises:
            ValueError: Pointing to ``batch_size`` when ``trainer.world_size > 1``.
        """
        if trainer.world_size > 1 and self.batch_size is None:
            raise ValueError(
                f"full-batch training holds the whole graph on every device and cannot be "
                f"split over {trainer.world_size} processes; set --data.init_args.batch_size "
                "(mini-batch training on k-hop neighbourhoods) to train on several devices"
            )

    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def _nodes(self, split: str) -> Tensor:
        data = self._graph()
        if split == "all":
            return torch.arange(data.num_nodes)
        return data[f"{split}_mask"].nonzero().view(-1)

    def _loader(self, split: str, train: bool = False) -> DataLoader:
        data = self._graph()
        if self.batch_size is None:
            return DataLoader(_WholeGraph(data), batch_size=None, shuffle=False)
        rank, world = self._rank_world()
        nodes = self._nodes(split)
        kwargs: dict[str, Any] = {}
        if train:
            if world > 1:
                kwargs["sampler"] = DistributedSampler(
                    _Seeds(nodes), num_replicas=world, rank=rank, shuffle=True
                )
            else:
                kwargs["shuffle"] = True
        elif world > 1:
            kwargs["sampler"] = ShardSampler(_Seeds(nodes), num_replicas=world, rank=rank)
        return DataLoader(
            _Seeds(nodes),
            batch_size=self.batch_size,
            collate_fn=KHopCollate(data, self.num_hops),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        """Whole graph, or k-hop batches of the training nodes (shuffled)."""
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        """Whole graph, or k-hop batches of the validation nodes."""
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        """Whole graph, or k-hop batches of the test nodes."""
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        """Whole graph, or k-hop batches of ``predict_split``'s nodes."""
        return self._loader(self.predict_split)

    def transfer_batch_to_device(
        self, batch: Any, device: torch.device, dataloader_idx: int
    ) -> Any:
        """Full batch: move the graph to the device once and reuse the copy every step."""
        if self.batch_size is None and batch is self.data:
            if self._device_graph is None or self._device_graph[0] != device:
                self._device_graph = (device, batch.to(device))
            return self._device_graph[1]
        return super().transfer_batch_to_device(batch, device, dataloader_idx)


class CitationGraphDataModule(GraphDataModule):
    """Planetoid citation graphs (Cora, CiteSeer, PubMed), public split; see the module docstring.

    Args:
        name: Cora, CiteSeer or PubMed.
        data_dir: Folder holding ``<Name>/raw/ind.<name>.*``; unset = env ``LIT_INFO_DATA``,
            else ``./data``.
        download: Download (and process) missing files with torch-geometric's ``Planetoid``.
        batch_size: See :class:`GraphDataModule`.
        num_hops: See :class:`GraphDataModule`.
        num_workers: See :class:`GraphDataModule`.
        predict_split: See :class:`GraphDataModule`.
    """

    def __init__(
        self,
        name: Literal["Cora", "CiteSeer", "PubMed"] = "Cora",
        data_dir: str | None = None,
        download: bool = False,
        batch_size: int | None = None,
        num_hops: int = 4,
        num_workers: int = 0,
        predict_split: Literal["train", "val", "test", "all"] = "all",
    ):
        super().__init__(batch_size, num_hops, num_workers, predict_split)
        if name not in PLANETOID_NAMES:
            raise ValueError(f"name must be one of {', '.join(PLANETOID_NAMES)}, got {name!r}")
        self.name = name
        self.data_dir = _data_dir(data_dir)
        self.download = download

    @property
    def shape(self) -> tuple[int, int]:
        """``(num_features, num_classes)`` of the named graph (no file read)."""
        return PLANETOID_SHAPES[self.name]

    def check_files(self) -> None:
        """Raise ``FileNotFoundError`` naming every missing raw file (unless downloading)."""
        files = planetoid_raw_files(self.data_dir, self.name)
        if not self.download and not all(f.is_file() for f in files):
            raise _missing_files_error(
                files,
                f"Planetoid {self.name}",
                f"put the files of kimiyoung/planetoid data/ into {self.data_dir / self.name}/raw "
                "or point --data.init_args.data_dir (env LIT_INFO_DATA) to a folder holding "
                f"{self.name}/raw",
            )

    def load_graph(self) -> Data:
        """Read the raw files (or download with ``Planetoid``); public split."""
        self.check_files()
        if self.download:
            from torch_geometric.datasets import Planetoid

            data = Planetoid(str(self.data_dir), self.name)[0]
        else:
            from torch_geometric.io import read_planetoid_data

            raw = self.data_dir / self.name / "raw"
            try:
                data = read_planetoid_data(str(raw), self.name.lower())
            except (pickle.UnpicklingError, EOFError, ValueError, OSError) as err:
                raise ValueError(
                    f"cannot read Planetoid {self.name} files in {raw}: {err}"
                ) from err
        data.edge_index = _symmetrize(data.edge_index, data.num_nodes)
        return data


class HomophilyGraphDataModule(GraphDataModule):
    """MixHop's synthetic homophily graphs, from the raw files or generated; split in thirds.

    Features are standardized (zero mean, unit variance per column over all nodes) unless
    ``standardize: false``: the raw coordinates are in the hundreds.

    Args:
        homophily: h; with ``source: files`` one of 0.0, 0.1, ..., 0.9.
        source: ``files`` (the MixHopSyntheticDataset raw files under ``data_dir``) or
            ``generate`` (:func:`homophily_graph` with ``num_nodes``, ``num_classes``,
            ``edges_per_node``, ``seed``).
        data_dir: Folder holding ``<h without the dot>/raw/ind.n5000-h<h>-c10.*``; unset = env
            ``LIT_INFO_DATA``, else ``./data``.
        download: Download missing files with ``MixHopSyntheticDataset`` (writes ``data_dir``).
        num_nodes: Generated graphs: N.
        num_classes: Generated graphs: C.
        edges_per_node: Generated graphs: edges per arriving node.
        seed: Generated graphs: random seed.
        standardize: Standardize the features.
        batch_size: See :class:`GraphDataModule`.
        num_hops: See :class:`GraphDataModule`.
        num_workers: See :class:`GraphDataModule`.
        predict_split: See :class:`GraphDataModule`.
    """

    def __init__(
        self,
        homophily: float = 0.5,
        source: Literal["files", "generate"] = "files",
        data_dir: str | None = None,
        download: bool = False,
        num_nodes: int = 5000,
        num_classes: int = 10,
        edges_per_node: int = 6,
        seed: int = 0,
        standardize: bool = True,
        batch_size: int | None = None,
        num_hops: int = 4,
        num_workers: int = 0,
        predict_split: Literal["train", "val", "test", "all"] = "all",
    ):
        super().__init__(batch_size, num_hops, num_workers, predict_split)
        if source == "files" and abs(10 * homophily - round(10 * homophily)) > 1e-9:
            raise ValueError(
                f"homophily must be one of 0.0, 0.1, ..., 0.9 for source files, got {homophily} "
                "(source: generate builds any h)"
            )
        if not 0.0 <= homophily <= 1.0:
            raise ValueError(f"homophily must be in [0, 1], got {homophily}")
        self.homophily = round(homophily, 1) if source == "files" else homophily
        self.source = source
        self.data_dir = _data_dir(data_dir)
        self.download = download
        self.num_nodes = num_nodes
        self.num_classes = num_classes
        self.edges_per_node = edges_per_node
        self.seed = seed
        self.standardize = standardize

    @property
    def shape(self) -> tuple[int, int]:
        """``(2, C)`` (2-D features)."""
        return 2, (10 if self.source == "files" else self.num_classes)

    def check_files(self) -> None:
        """Raise ``FileNotFoundError`` naming every missing raw file (files, not downloading)."""
        if self.source != "files" or self.download:
            return
        files = homophily_raw_files(self.data_dir, self.homophily)
        if not all(f.is_file() for f in files):
            raise _missing_files_error(
                files,
                f"MixHop synthetic graph h={self.homophily:0.1f}",
                "take them from samihaija/mixhop data/synthetic/, or use "
                "--data.init_args.source generate",
            )

    def load_graph(self) -> Data:
        """Read the raw files (as ``MixHopSyntheticDataset.process``) or generate the graph."""
        from torch_geometric.data import Data

        if self.source == "generate":
            x, y, edge_index = homophily_graph(
                self.num_nodes,
                self.num_classes,
                self.homophily,
                self.edges_per_node,
                self.seed,
                progress=self.num_nodes > 20000,
            )
        else:
            self.check_files()
            if self.download:
                from torch_geometric.datasets import MixHopSyntheticDataset

                graph = MixHopSyntheticDataset(str(self.data_dir), self.homophily)[0]
                x, y, edge_index = graph.x, graph.y, graph.edge_index
            else:
                allx, ally, graph_file = homophily_raw_files(self.data_dir, self.homophily)
                try:
                    x = torch.from_numpy(np.load(allx)).float()
                    y = torch.from_numpy(np.load(ally)).argmax(dim=-1)
                    with open(graph_file, "rb") as handle:
                        lists = pickle.load(handle, encoding="latin1")
                except (pickle.UnpicklingError, EOFError, ValueError, OSError) as err:
                    raise ValueError(f"cannot read {allx.parent}: {err}") from err
                src = [k for k, v in lists.items() for _ in v]
                dst = [n for v in lists.values() for n in v]
                edge_index = torch.tensor([src, dst], dtype=torch.long)
            edge_index = _symmetrize(edge_index, x.shape[0])
        if self.standardize:
            x = (x - x.mean(0)) / x.std(0).clamp(min=1e-12)
        n = x.shape[0]
        third = n // 3
        masks = [torch.zeros(n, dtype=torch.bool) for _ in range(3)]
        for k, mask in enumerate(masks):
            mask[k * third : (k + 1) * third] = True
        return Data(
            x=x,
            y=y,
            edge_index=edge_index,
            train_mask=masks[0],
            val_mask=masks[1],
            test_mask=masks[2],
        )
