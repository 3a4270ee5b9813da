"""Train: the one training loop and everything it runs on, and folding a trained WaveViT into timm.

loop.py         train(): AdamW, warmup + cosine, AMP, torch.compile, DDP, exact resume
config.py       TrainConfig, the schedule, the data order and the result records
batches.py      where the training set lives during a run and each step's batch
checkpoint.py   training checkpoints (weights_only reads)
distributed.py  torchrun / DistributedDataParallel helpers
folding.py      WaveViT -> plain timm state dict (safetensors), strict loading
baselines.py    random init and weight selection, the initializations WAVE is measured against
"""
