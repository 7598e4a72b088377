"""SVI throughput of ImplicitRM against a plain PyTorch BCE loop over the same reward MLP.

Prints rows per second per epoch and the cost of each ImplicitRM fit relative to the plain loop,
all measured in one run on the same 384-dim embeddings. The plain loop is timed again right before
each fit and each ratio uses that adjacent timing: on a shared machine the speed drifts between
minutes, and a ratio of two timings taken far apart would carry that drift. With ``--chatlog``
the log is a simulated chat log with four channels (two positive, one negative, dwell seconds) and
200 users, and the ImplicitRM fits declare every channel and the users.

    python benchmarks/throughput.py [--rows 100000] [--batch-size 1024] [--epochs 3] [--chatlog]
"""

from __future__ import annotations

import argparse
import time

import torch

from pyro_irm import ModelConfig, SimulationConfig, TrainConfig, fit, simulate
from pyro_irm.channels import describe_channels
from pyro_irm.data.chatlog_simulation import ChatLogConfig, simulate_chatlog
from pyro_irm.models.networks import MLP


def plain_bce_epoch_seconds(data, hidden, batch_size: int, epochs: int, lr: float) -> float:
    """Median seconds per epoch of a hand-written BCE loop on the reward MLP."""
    torch.manual_seed(0)
    net = MLP(data.embedding_dim, hidden, 1)
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    times = []
    for epoch in range(epochs):
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(epoch))
        started = time.perf_counter()
        for batch in order.split(batch_size):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(net(data.embeddings[batch]).squeeze(-1), data.action[batch])
            loss.backward()
            optimizer.step()
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--chatlog", action="store_true", help="four channels and users")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    if args.chatlog:
        data = simulate_chatlog(args.rows, args.dim, ChatLogConfig())
        print(
            f"chat log: {data.num_channels} channels ({describe_channels(data.channels)}), "
            f"{data.num_users} users"
        )
    else:
        data = simulate(SimulationConfig(num_rows=args.rows, embedding_dim=args.dim))
    model_config = ModelConfig()
    print(
        f"{args.rows:,} rows x {args.dim} dims, batch {args.batch_size}, "
        f"{torch.get_num_threads()} threads, reward MLP {model_config.reward_hidden}"
    )
    plain = plain_bce_epoch_seconds(data, model_config.reward_hidden, args.batch_size, args.epochs, 3e-3)
    print(f"{'fit':<38}{'s/epoch':>10}{'rows/s':>12}{'x plain':>10}")
    print(f"{'plain PyTorch BCE loop':<38}{plain:>10.3f}{args.rows / plain:>12,.0f}{1.0:>10.2f}")
    runs = [
        ("naive (Pyro, Trace_ELBO)", dict(method="naive")),
        ("implicitrm enumerate (TraceEnum_ELBO)", dict(inference="enumerate")),
        ("implicitrm fused (the default)", dict(inference="fused")),
        ("implicitrm amortized, guide enumerated", dict(inference="amortized")),
        (
            "implicitrm amortized, score function",
            dict(inference="amortized", guide_gradient="score_function"),
        ),
    ]
    for name, overrides in runs:
        plain = plain_bce_epoch_seconds(data, model_config.reward_hidden, args.batch_size, args.epochs, 3e-3)
        config = TrainConfig(
            batch_size=args.batch_size,
            max_epochs=args.epochs,
            validation_fraction=0.0,
            progress=False,
            **overrides,
        )
        result = fit(data, config)
        seconds = sorted(result.history.epoch_seconds)[args.epochs // 2]
        ratio = seconds / plain
        print(f"{name:<38}{seconds:>10.3f}{args.rows / seconds:>12,.0f}{ratio:>10.2f}  (plain {plain:.3f})")


if __name__ == "__main__":
    main()
