"""SageMaker Debugger and profiling for train/, on SageMaker and locally.

config.py    the rules, their parameters and the tensor collections they read: one place, used by
             the training container, the local rule command and scripts/sagemaker_train.py
hook.py      the smdebug hook, created from SageMaker's debughookconfig.json (or our default)
rules.py     SageMaker's built-in rules re-implemented over a saved trial: python -m debugger.rules
profiler.py  system sampler, per-step timing, torch.profiler trace, bottleneck rules
report.py    the HTML report in output/data
"""
