"""Stage 1 of WAVE (``wave-deploy templates build``): a teacher's knowledge condensed into a template bank.

learngene.py      the auxiliary WaveViT distilled from the teacher, elastic sub-sizes, the bank file
teacher.py        the teacher: a timm model by name (pretrained from the hub), or a checkpoint
teacher_check.py  is the teacher worth learning from (its accuracy against chance); a probed head
geometry.py       the bank's geometry read from the teacher (image, patch, head size, MLP ratio, aux size)
inputs.py         the data and teacher prepared for that geometry
estimate.py       time and memory of the whole run, from a few real steps, before training
"""
