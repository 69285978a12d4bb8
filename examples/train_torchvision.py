"""Train torchvision's ResNet-18 on CIFAR-10 layer-parallel, in your own training loop.

    python examples/train_torchvision.py --data-dir ../shared/data        # 2 stages in one process
    torchrun --standalone --nproc-per-node 2 examples/train_torchvision.py --data-dir ../shared/data   # a stage per worker

The first --parallel-epochs train every stage at once, each on its own batch (the penalty method
with pipelined λ, LayerParallel's default: stage k's gradient arrives K-1-k steps late); the rest
are ordinary backprop through the same stages. Every epoch is augmented.
"""
import argparse
import datetime
import os

import torch
import torch.distributed as dist
import torchvision

import lpfast
from lpfast.batches import BatchIterator
from lpfast.datasets import load_dataset
from lpfast.transport import DistTransport

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--data-dir", default=None)
parser.add_argument("--dataset", default="cifar10", help="cifar10, cifar100, mnist or embedded (shipped, no folder)")
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--parallel-epochs", type=int, default=5)
parser.add_argument("--subset", type=int, default=None, help="train and test on this many images only (a quick look)")
args = parser.parse_args()

distributed = "WORLD_SIZE" in os.environ  # under torchrun: one stage per worker, one core each
if distributed:
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
train, test = load_dataset(args.dataset, "train", args.data_dir), load_dataset(args.dataset, "test", args.data_dir)
if args.subset:
    train, test = train.subset(args.subset), test.subset(args.subset)

torch.manual_seed(0)  # every worker builds the same network
model = torchvision.models.resnet18(num_classes=train.num_classes)
model.conv1 = torch.nn.Conv2d(train.in_channels, 64, 3, padding=1, bias=False)  # the usual stem for 32×32 images
model.maxpool = torch.nn.Identity()
lp = lpfast.LayerParallel(model, optimizer=lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=5e-4),
                          stages=2, input_shape=tuple(train.images.shape[1:]),
                          transport=DistTransport(datetime.timedelta(seconds=120)) if distributed else None)

for epoch in range(args.epochs):
    parallel = epoch < args.parallel_epochs
    for b in BatchIterator(train, 128, shuffle=True, epoch=epoch, drop_last=True, augment_padding=4):
        lp.step(b.x, b.y) if parallel else lp.serial_step(b.x, b.y, micro_batches=4)
    stats = lp.end_epoch()  # finishes the batches still in flight
    loss, accuracy = lp.evaluate((b.x, b.y) for b in BatchIterator(test, 500, shuffle=False))
    if not distributed or dist.get_rank() == 0:
        print(f"epoch {epoch + 1} ({stats['phase']}): test accuracy {accuracy:.2f}%")
if distributed:
    dist.destroy_process_group()  # let gloo's threads finish before the process exits
