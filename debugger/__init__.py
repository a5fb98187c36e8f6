"""The rules and profiling of a training job, evaluated by the job itself (SageMaker Debugger and
Profiler not needed), and SageMaker Debugger's hook for the accounts that still have it.

config.py    the rules, their parameters and actions, the hook's tensor collections: one place,
             used by the training container, the rule command and scripts/sagemaker_train.py
record.py    the job's TensorBoard record (output/tensorboard), which the rules read back
rules.py     SageMaker's built-in rules over the record or an smdebug trial: python -m debugger.rules
watch.py     every rule over the record, every epoch; the rule actions that stop training
profiler.py  system sampler, per-step timing, torch.profiler trace, bottleneck rules
hook.py      the smdebug hook, created from SageMaker's debughookconfig.json (or our default)
report.py    the HTML report in output/data
"""
