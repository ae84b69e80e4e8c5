"""Neighbour-sampled training of MAGNET (or LightGCN) on a large synthetic graph, PyG style.

Every mini-batch of (user, positive, negative) samples brings its sampled 2-hop subgraph
(PyG ``LinkNeighborLoader`` over the ``HeteroData``: relations ``rates`` / ``rated_by`` for the
observed view, plus ``induced`` / ``induced_by`` for the augmented view), the dual-view LightGCN
encoder runs on that subgraph with the full-graph degrees, and the MoE head scores the seeds.
Evaluation computes the exact representations layer by layer in node chunks and runs the exact
full ranking.

    python examples/sampled_training.py                          # 60k users, 20k items (~minutes, CPU)
    python examples/sampled_training.py --preset electronics     # 192k users, 63k items, 1.69M interactions
    python examples/sampled_training.py --model lightgcn --fanout 15 10 --device cuda --workers 4
"""
import argparse
import time

import torch

from magnet_pyg.data import SyntheticSpec, modality_features, num_items, num_users, split_edge_index, synthetic
from magnet_pyg.evaluate import Evaluator
from magnet_pyg.evaluate.layerwise import layerwise_inference
from magnet_pyg.models import LightGCN
from magnet_pyg.models.magnet import MAGNET
from magnet_pyg.train import LinkSampler
from magnet_pyg.train.sampled import prepare_sampled, sampled_loss

LARGE = SyntheticSpec(num_users=60_000, num_items=20_000, num_interactions=600_000, latent_dim=32,
                      modalities=(("image", 256, 1.0), ("text", 128, 0.5)))

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--preset", default=None, help="synthetic preset instead of the built-in 60k-user graph "
                                              "(tiny | small | electronics)")
p.add_argument("--model", choices=["magnet", "lightgcn"], default="magnet")
p.add_argument("--fanout", type=int, nargs="+", default=[10, 10], help="per layer, -1 = all")
p.add_argument("--batch-size", type=int, default=1024)
p.add_argument("--epochs", type=int, default=2)
p.add_argument("--max-steps", type=int, default=300, help="steps per epoch at most (0: whole epoch)")
p.add_argument("--workers", type=int, default=1, help="CPU processes sampling subgraphs ahead")
p.add_argument("--eval-users", type=int, default=2000, help="validation users ranked (0: all)")
p.add_argument("--device", default="cpu")
p.add_argument("--threads", type=int, default=1, help="torch threads of the training process")
args = p.parse_args()
torch.set_num_threads(args.threads)
device = torch.device(args.device)

# ---------------------------------------------------------------- data and content-induced view
t0 = time.perf_counter()
data = synthetic(args.preset or LARGE, seed=0, name=None if args.preset else "synthetic-60k")
print(f"data: {num_users(data):,} users, {num_items(data):,} items, "
      f"{split_edge_index(data, 'train').size(1):,} training interactions ({time.perf_counter() - t0:.1f}s)")
if args.model == "magnet":
    from magnet_pyg.graph import add_induced_edges
    t0 = time.perf_counter()
    data = add_induced_edges(data, k=20, r=50, progress=False)  # E+ (Eq. 1-3)
    print(f"induced edges: {data['user', 'induced', 'item'].num_edges:,} ({time.perf_counter() - t0:.1f}s)")

# ---------------------------------------------------------------- model and sampled context
torch.manual_seed(0)
if args.model == "magnet":
    dims = {m: x.size(1) for m, x in modality_features(data).items()}
    model = MAGNET(num_users(data), num_items(data), dims, embedding_dim=48, num_layers=len(args.fanout),
                   view="dual")
else:
    model = LightGCN(num_users(data), num_items(data), 64, num_layers=len(args.fanout))
model = model.to(device)
graph = prepare_sampled(model, data, fanout=args.fanout, num_workers=args.workers)  # no full adjacency
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
link_sampler = LinkSampler(split_edge_index(data, "train"), num_items(data), args.batch_size)
evaluator = Evaluator(data, ks=(10, 20), batch_size=1024)
eval_users = torch.unique(split_edge_index(data, "valid")[0])
if args.eval_users:
    eval_users = eval_users[torch.randperm(eval_users.numel(), generator=torch.Generator().manual_seed(0))
                            [:args.eval_users]].sort().values

# one sampled mini-batch, to see what the loader produces
u, i, j = next(link_sampler.epoch(torch.Generator().manual_seed(0)))
print(graph.sampler.sample(u, i, j).subgraph)

for epoch in range(args.epochs):
    model.train()
    gen = torch.Generator().manual_seed(epoch)
    batches = list(link_sampler.epoch(gen))[:args.max_steps or None]
    t0, total = time.perf_counter(), 0.0
    for batch in graph.sampler.iterate(batches):            # SampledBatch: triplets + HeteroData subgraph
        batch = batch.to(device)
        loss, logs = sampled_loss(model, graph, batch)        # encoder on the subgraph, head on the seeds
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += float(loss)
    train_s = time.perf_counter() - t0
    print(f"epoch {epoch}: loss {total / len(batches):.4f}  {len(batches)} steps in {train_s:.1f}s "
          f"({len(batches) * args.batch_size / train_s:,.0f} samples/s)", flush=True)
    t0 = time.perf_counter()
    state = layerwise_inference(model, graph.layerwise_graph(), chunk_size=65536)  # exact, chunked
    valid = evaluator.evaluate(model, None, "valid", users=eval_users, state=state)  # exact full ranking
    print(f"  valid recall@20 {valid['recall@20']:.4f} ndcg@20 {valid['ndcg@20']:.4f} over "
          f"{valid['num_users']:,} users x {num_items(data):,} items ({time.perf_counter() - t0:.1f}s)", flush=True)
