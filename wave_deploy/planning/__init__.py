"""Plan: predict what each ViT size costs on a device and choose the one that fits its budgets.

selection.py  the search space and the budget-driven choice (exit 5 when nothing fits)
plan.py       plan(): the one function behind `wave-deploy plan` and `wave_deploy.plan`
latency.py    analytic and calibrated latency models (a calibration is made by wave_deploy.calibration)
memory.py     runtime and engine-build memory estimates
plot.py       the frontier plot of ``plan --plot``
"""
