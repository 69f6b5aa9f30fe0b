"""A rank entry whose rank 1 fails in epoch 2 (run by torchrun in test_processes.py): the real rank
entry, with the loop's epoch function wrapped to raise there."""

import os
import sys

import trainer.training.loop as loop
from trainer.runs import rank_main

real_epoch = loop.train_one_epoch


def failing_epoch(model, optimizer, batches, exp, epoch, *args, **kwargs):
    if os.environ.get("RANK") == "1" and epoch == 2:
        raise RuntimeError("rank 1 ran out of luck in epoch 2")
    return real_epoch(model, optimizer, batches, exp, epoch, *args, **kwargs)


loop.train_one_epoch = failing_epoch

if __name__ == "__main__":
    sys.exit(rank_main.main(sys.argv[1]))
