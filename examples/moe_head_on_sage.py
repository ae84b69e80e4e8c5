"""Compose MAGNET's layers with another PyG encoder: the triplet MoE head and the
entropy-triggered routing schedule on top of a heterogeneous GraphSAGE encoder.

    python examples/moe_head_on_sage.py [--data synthetic|tiktok|PATH] [--epochs 30] [--conv sage|gat]

The encoder is ``HeteroConv`` with one ``SAGEConv`` (or ``GATConv``) per direction of the
training edges of the same ``HeteroData`` that every magnet_pyg model uses. Its user and item
outputs play the role of MAGNET's behaviour embeddings ``z`` (Eq. 6); ``ModalityCues`` gives the
content cues (Eq. 7-8), ``TripletMoEHead`` scores the pairs (Eq. 9-21) and ``EntropySchedule``
weights the coverage / confidence regularisers (Eq. 22-26, 29-31). The model follows the
package's recommender protocol (``prepare`` / ``loss`` / ``inference`` / ``score``), so the
package's ``Trainer`` trains it (validation early stopping, checkpoints) and its exact
full-ranking ``Evaluator`` scores it: the head's factorised ``score_all`` ranks every item.
"""
import argparse

import torch
from torch import Tensor
from torch_geometric.nn import GATConv, HeteroConv, SAGEConv

from magnet_pyg.data import RATED_BY, RATES, load_dataset, modality_features, num_items, num_users
from magnet_pyg.data import split_edge_index
from magnet_pyg.models.base import Recommender
from magnet_pyg.nn import EntropySchedule, ModalityCues, TripletMoEHead
from magnet_pyg.nn.adjacency import row_normalized, transpose_csr
from magnet_pyg.nn.losses import bpr_loss, confidence_loss, coverage_loss, embedding_l2
from magnet_pyg.train import TrainConfig, Trainer


class SageMoE(Recommender):
    """Learned ID embeddings -> ``num_layers`` x HeteroConv(SAGE|GAT) -> triplet MoE head."""

    def __init__(self, num_users: int, num_items: int, modality_dims: dict, channels: int = 64,
                 num_layers: int = 2, conv: str = "sage", top_k: int = 4, threshold: float = 0.9,
                 window: int = 3, lambda_r: float = 0.3, reg_weight: float = 1e-4):
        super().__init__()
        self.num_users, self.reg_weight = num_users, reg_weight
        self.user_emb = torch.nn.Embedding(num_users, channels)
        self.item_emb = torch.nn.Embedding(num_items, channels)
        make = {"sage": lambda: SAGEConv((-1, -1), channels),
                "gat": lambda: GATConv((-1, -1), channels, add_self_loops=False)}[conv]
        self.convs = torch.nn.ModuleList(
            HeteroConv({RATES: make(), RATED_BY: make()}, aggr="sum") for _ in range(num_layers))
        self.cues = ModalityCues(modality_dims, channels)
        self.head = TripletMoEHead(channels, list(modality_dims), top_k=top_k)
        self.schedule = EntropySchedule(threshold, window, lambda_r)
        self.modalities = list(modality_dims)
        self.reset_parameters()

    def reset_parameters(self):
        torch.nn.init.normal_(self.user_emb.weight, std=0.1)
        torch.nn.init.normal_(self.item_emb.weight, std=0.1)
        for conv in self.convs:
            conv.reset_parameters()
        self.cues.reset_parameters()
        self.head.reset_parameters()
        self.schedule.reset()

    def prepare(self, data):
        """Training edges in both directions, the history-pooling matrix and the features."""
        U, I = num_users(data), num_items(data)
        train = split_edge_index(data, "train")
        hist = row_normalized(train, U, I)
        feats = modality_features(data)
        return {"edge_index_dict": {RATES: train, RATED_BY: train.flip(0)},
                "user_item": hist, "item_user": transpose_csr(hist),
                "features": [torch.nn.functional.normalize(feats[m], dim=1) for m in self.modalities]}

    def forward(self, graph):
        x = {"user": self.user_emb.weight, "item": self.item_emb.weight}
        for k, conv in enumerate(self.convs):
            x = conv(x, graph["edge_index_dict"])
            if k < len(self.convs) - 1:
                x = {key: v.relu() for key, v in x.items()}
        h_u, h_i = self.cues(graph["features"], graph["user_item"], graph["item_user"])
        return x["user"], x["item"], h_u, h_i

    def loss(self, graph, users: Tensor, pos: Tensor, neg: Tensor):
        z_u, z_i, h_u, h_i = self(graph)
        p = self.head(z_u[users], z_i[pos], h_u[users], h_i[pos])
        n = self.head(z_u[users], z_i[neg], h_u[users], h_i[neg])
        loss = bpr_loss(p.score, n.score) + self.reg_weight * embedding_l2(
            self.user_emb.weight[users], self.item_emb.weight[pos], self.item_emb.weight[neg])
        sched = self.schedule.update(p.pi)        # Alg. 2: entropy counter, one-way switch
        if sched["lambda_cov"] > 0:
            loss = loss + sched["lambda_cov"] * coverage_loss(p.pi)
        if sched["lambda_conf"] > 0:
            loss = loss + sched["lambda_conf"] * confidence_loss(p.pi)
        return loss, {"entropy_norm": sched["entropy_norm"], "n_eff": sched["n_eff"],
                      "stage": sched["stage"]}

    @torch.no_grad()
    def inference(self, graph):
        return self(graph)

    def score(self, state, users: Tensor, items=None) -> Tensor:
        z_u, z_i, h_u, h_i = state
        if items is None:                          # exact [B, I] full ranking
            return self.head.score_all(z_u[users], h_u[users], z_i, h_i)
        return self.head(z_u[users], z_i[items], h_u[users], h_i[items]).score


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="synthetic")
    p.add_argument("--conv", choices=["sage", "gat"], default="sage")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="run folder (checkpoints, results.json)")
    args = p.parse_args(argv)
    data = load_dataset(args.data)
    dims = {m: int(x.size(1)) for m, x in modality_features(data).items()}
    torch.manual_seed(args.seed)
    model = SageMoE(num_users(data), num_items(data), dims, conv=args.conv)
    config = TrainConfig(epochs=args.epochs, batch_size=2048, lr=1e-3, seed=args.seed, patience=10,
                         out_dir=args.out, progress=False)
    results = Trainer(config).fit(model, data, f"{args.conv}-moe")
    last = results["epochs"][-1]
    print(f"{args.conv.upper()} + triplet MoE on {args.data}: best epoch {results['best_epoch']}, "
          f"test recall@20 {results['test']['recall@20']:.4f} ndcg@20 {results['test']['ndcg@20']:.4f}; "
          f"routing stage {last['stage']:.0f}, N_eff {last['n_eff']:.2f}")
    return results


if __name__ == "__main__":
    main()
