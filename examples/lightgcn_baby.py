"""LightGCN on Amazon Baby (exact MMRec split), PyG style, through magnet_pyg's public API.

    python examples/lightgcn_baby.py [--data PATH_TO/baby] [--epochs 200]

Loads the MMRec folder into a ``HeteroData``, trains LightGCN with BPR on mini-batches of
(user, positive, negative) samples, stops early on validation NDCG@20, and reports test
metrics at the selected checkpoint.
"""
import argparse

import torch

from magnet_pyg.data import default_data_root, load_mmrec, num_items, num_users
from magnet_pyg.evaluate import Evaluator
from magnet_pyg.models import LightGCN
from magnet_pyg.train import TrainConfig, Trainer

parser = argparse.ArgumentParser()
parser.add_argument("--data", default=str(default_data_root() / "baby"))
parser.add_argument("--epochs", type=int, default=200)
parser.add_argument("--layers", type=int, default=2)
parser.add_argument("--reg-weight", type=float, default=1e-4)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
args = parser.parse_args()

data = load_mmrec(args.data)                       # HeteroData: user, item, (user, rates, item), ...
print(data)

torch.manual_seed(args.seed)
model = LightGCN(num_users(data), num_items(data), embedding_dim=64,
                 num_layers=args.layers, reg_weight=args.reg_weight)

config = TrainConfig(epochs=args.epochs, batch_size=2048, lr=1e-3, seed=args.seed,
                     device=args.device, select_metric="ndcg@20")
results = Trainer(config).fit(model, data, "lightgcn")
print(f"best epoch {results['best_epoch']}: valid {results['valid']}")
print(f"test: recall@20 {results['test']['recall@20']:.4f}  ndcg@20 {results['test']['ndcg@20']:.4f}")

# The evaluator can be used on its own, e.g. also masking validation items when testing:
evaluator = Evaluator(data, ks=(10, 20), mask_valid_in_test=True)
print("test (valid items masked):", evaluator.evaluate(model, model.prepare(data), "test"))
