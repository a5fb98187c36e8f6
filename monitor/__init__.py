"""Image drift monitoring: does the traffic an endpoint sees still look like the training data?

A baseline is made from the validation images when the model is trained and saved in the
artifact (baseline.json). A window of captured traffic (SageMaker data capture's JSON lines) is
described the same way and compared with it: the predicted classes, the model's confidence, the
images' size, brightness and colour, and how far their backbone features lie from the
validation images'. monitor.run writes a JSON of violations, an HTML report, and SageMaker Model
Monitor's output files, locally, as a scheduled pipeline's processing step, or as a Model
Monitor custom monitoring schedule's processing job.
"""

# The CloudWatch namespace a scheduled pipeline's run puts its figures in (monitor.run
# --publish-metrics; scripts/sagemaker_monitor.py alarms on it). Model Monitor uses its own.
METRIC_NAMESPACE = "BYOC/ImageDrift"
