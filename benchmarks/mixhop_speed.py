"""Epochs per second: lit_info's MixHop against a plain torch-geometric MixHopConv model.

Both nets have the CiteSeer architecture of the paper (powers {0, 1, 2}, 20 units per power in
the hidden layer, 6 in the output layer: exactly expressible with MixHopConv, which gives every
power the same width), batch norm, dropout, the same input (binarized, L2-normalized features);
one epoch = one full-batch SGD step + one evaluation forward, in a plain torch loop. Our net
projects before propagating and feeds the features as a sparse matrix; MixHopConv propagates
the 3,703-wide dense input. Also timed: our whole Lightning fit (400 epochs incl. validation,
checkpointing off) as epochs per second.

    python benchmarks/mixhop_speed.py [--dataset CiteSeer] [--epochs 100] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import time

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from mixhop_common import DATASETS, quiet

from lit_info.data import CitationGraphDataModule
from lit_info.methods import MixHop
from lit_info.nets.graph import MixHopNet, adjacency_matrix

WIDTHS = {"CiteSeer": (20, 6), "Cora": (20, 7)}


class PlainMixHopConvNet(torch.nn.Module):
    def __init__(self, in_features: int, num_classes: int, hidden: int, out: int):
        from torch_geometric.nn import MixHopConv

        super().__init__()
        self.conv1 = MixHopConv(in_features, hidden, powers=[0, 1, 2], bias=False)
        self.norm = torch.nn.BatchNorm1d(
            3 * hidden, eps=1e-3, affine=False, track_running_stats=False
        )
        self.conv2 = MixHopConv(3 * hidden, out, powers=[0, 1, 2], bias=False)
        self.q = torch.nn.Parameter(torch.zeros(3))
        self.num_classes = num_classes

    def forward(self, x, edge_index):
        x = F.dropout(x, 0.5, self.training)
        x = F.normalize((x != 0).float(), dim=1)
        h = F.dropout(F.relu(self.norm(self.conv1(x, edge_index))), 0.9, self.training)
        o = self.conv2(h, edge_index)
        return torch.einsum("nbc,b->nc", o.view(o.shape[0], 3, -1), torch.softmax(self.q, 0))


def epochs_per_second(step, epochs: int, device: str) -> float:
    for _ in range(5):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(epochs):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return epochs / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="CiteSeer")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    quiet()
    dm = CitationGraphDataModule(args.dataset, data_dir=str(DATASETS / "planetoid"))
    dm.setup()
    data = dm.data.to(args.device)
    raw_edges = data.edge_index[
        :, data.edge_index[0] != data.edge_index[1]
    ]  # MixHopConv adds loops
    hidden, out = WIDTHS[args.dataset]
    f, c = data.x.shape[1], int(data.y.max()) + 1
    ours = MixHopNet(f, c, hidden_widths=[[hidden] * 3], output_widths=[out] * 3).to(args.device)
    adj = adjacency_matrix(data.edge_index, data.edge_weight, data.num_nodes)
    plain = PlainMixHopConvNet(f, c, hidden, out).to(args.device)
    n_ours = sum(p.numel() for p in ours.parameters())
    n_plain = sum(p.numel() for p in plain.parameters())

    def make_step(net, call):
        optimizer = torch.optim.SGD(net.parameters(), lr=0.25)

        def step():
            net.train()
            optimizer.zero_grad()
            loss = F.cross_entropy(call(net)[data.train_mask], data.y[data.train_mask])
            loss.backward()
            optimizer.step()
            net.eval()
            with torch.no_grad():
                call(net).argmax(1)

        return step

    ours_eps = epochs_per_second(
        make_step(ours, lambda n: n(data.x, adj)), args.epochs, args.device
    )
    plain_eps = epochs_per_second(
        make_step(plain, lambda n: n(data.x, raw_edges)), args.epochs, args.device
    )
    # the whole Lightning fit of the config's recipe, epochs per second
    model = MixHop(
        in_features=f,
        num_classes=c,
        hidden_widths=[[hidden] * 3],
        output_widths=[out] * 3,
        lr=0.25,
        l2=5e-2,
        figure_every_n_epochs=0,
    )
    trainer = pl.Trainer(
        max_epochs=400,
        accelerator=args.device,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    trainer.fit(model, dm)
    fit_eps = trainer.current_epoch / (time.perf_counter() - start)
    print(
        f"{args.dataset}, device {args.device}, torch threads {args.threads}; parameters: "
        f"ours {n_ours}, MixHopConv model {n_plain}"
    )
    print(f"{'model':40} {'epochs/s':>9}")
    print(f"{'lit_info MixHopNet (torch loop)':40} {ours_eps:9.1f}")
    print(f"{'torch-geometric MixHopConv (torch loop)':40} {plain_eps:9.1f}")
    print(f"{'lit_info MixHop, Lightning fit (400 ep)':40} {fit_eps:9.1f}")
    print(
        f"ratio ours / MixHopConv: {ours_eps / plain_eps:.1f}x (Lightning fit: "
        f"{fit_eps / plain_eps:.1f}x)"
    )


if __name__ == "__main__":
    main()
